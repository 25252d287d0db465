//! Who may call what: the access policy of every API route, as data.
//!
//! [`POLICY`] has one [`Rule`] per (method, route template) served under `/api/v1`; the one
//! layer [`crate::auth::enforce`] looks the matched route up here before any handler runs, and
//! refuses a route without a rule (fail closed). A unit test checks that the routes the router
//! is built from and the rules are the same set, and the integration test `access.rs` walks the
//! table against the real server for every role, as owner and as non-owner.

use runvoy_domain::Role;

/// What one role may do on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Allowed on every resource.
    All,
    /// Allowed only on resources the caller owns: a single resource is checked before the
    /// handler runs (403 otherwise); a list is filtered to the caller's own.
    Own,
    /// Refused (403).
    Deny,
}

/// The resource a route acts on, which decides what [`Grant::Own`] means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Nothing owned (or the caller's own user, by construction): `Own` is the same as `All`.
    None,
    /// The execution named by the `{id}` path parameter; its owner is its creator.
    Execution,
    /// The list of executions: `Own` filters it to the caller's.
    ExecutionList,
    /// The secret named by the `{name}` path parameter (or, for `USE`, named by a run); its
    /// owner is its creator.
    Secret,
}

/// How a route is accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (health, readiness, OpenAPI document, claiming a key with its one-time token).
    Public,
    /// A WebSocket token in the URL instead of a key. Tokens are minted only by routes that went
    /// through this policy for the same execution (`POST /run`, `GET /executions/{id}/logs`),
    /// are bound to the user and the execution, and die with the user's key.
    LogToken,
    /// An execution's single-use secrets fetch token in the body instead of a key. Minted only
    /// by `POST /run` after the `USE` rule allowed each secret, bound to the execution and its
    /// secrets, answered once while the execution is unfinished.
    SecretsToken,
    /// An API key; what each role may do, in the order of [`Role::ALL`]
    /// (admin, operator, developer, viewer).
    Key(Resource, [Grant; 4]),
}

impl Access {
    /// What `role` may do (`Deny` for routes that take no key).
    pub fn grant(&self, role: Role) -> Grant {
        match self {
            Access::Key(_, grants) => {
                let i = Role::ALL.iter().position(|r| *r == role).unwrap_or(0);
                grants[i]
            }
            _ => Grant::Deny,
        }
    }
}

/// One route's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// HTTP method (HEAD is checked as GET).
    pub method: &'static str,
    /// Route template under `/api/v1`, exactly as the router declares it.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

use Grant::{All as A, Deny as N, Own as O};

const fn key(method: &'static str, path: &'static str, r: Resource, g: [Grant; 4]) -> Rule {
    Rule {
        method,
        path,
        access: Access::Key(r, g),
    }
}

const fn public(method: &'static str, path: &'static str) -> Rule {
    Rule {
        method,
        path,
        access: Access::Public,
    }
}

/// The policy. Columns: admin, operator, developer, viewer. Rules whose method is `USE` are
/// not routes but an action another route checks: `POST /run` checks `USE` on each secret a
/// run names (403 otherwise, before anything starts).
#[rustfmt::skip]
pub const POLICY: &[Rule] = &[
    public("GET",  "/health"),
    public("GET",  "/health/ready"),
    public("GET",  "/openapi.json"),
    public("POST", "/claim/{token}"),
    Rule { method: "GET", path: "/executions/{id}/logs/ws", access: Access::LogToken },
    //   method    route                          resource                  admin op dev viewer
    key("POST",   "/run",                         Resource::None,          [A, A, A, N]),
    key("GET",    "/executions",                  Resource::ExecutionList, [A, A, O, O]),
    key("GET",    "/executions/{id}",             Resource::Execution,     [A, A, O, O]),
    key("GET",    "/executions/{id}/status",      Resource::Execution,     [A, A, O, O]),
    key("GET",    "/executions/{id}/logs",        Resource::Execution,     [A, A, O, O]),
    key("DELETE", "/executions/{id}",             Resource::Execution,     [A, A, O, N]),
    key("POST",   "/health/reconcile",            Resource::None,          [A, N, N, N]),
    key("GET",    "/health/reports",              Resource::None,          [A, N, N, N]),
    key("GET",    "/users",                       Resource::None,          [A, A, N, N]),
    key("GET",    "/users/",                      Resource::None,          [A, A, N, N]),
    key("POST",   "/users/create",                Resource::None,          [A, N, N, N]),
    key("POST",   "/users/revoke",                Resource::None,          [A, N, N, N]),
    key("POST",   "/users/set-role",              Resource::None,          [A, N, N, N]),
    // Acts on the caller's own key only, so every role may.
    key("POST",   "/users/rotate-key",            Resource::None,          [A, A, A, A]),
    // The caller's own user (email, role): what a client needs to show only what it may do.
    key("GET",    "/users/me",                    Resource::None,          [A, A, A, A]),
    key("GET",    "/trace/{request_id}",          Resource::None,          [A, N, N, N]),
    // Developers run with images (`POST /run`) and may see them; viewers only see them.
    key("GET",    "/images",                      Resource::None,          [A, A, A, A]),
    key("GET",    "/images/{*id}",                Resource::None,          [A, A, A, A]),
    key("POST",   "/images/register",             Resource::None,          [A, A, N, N]),
    key("DELETE", "/images/{*id}",                Resource::None,          [A, A, N, N]),
    // Secrets: anyone who runs may create and use them and see their metadata (never a
    // value); developers change, delete and reveal only their own; only an owner or an admin
    // ever sees a value.
    key("POST",   "/secrets",                     Resource::None,          [A, A, A, N]),
    key("GET",    "/secrets",                     Resource::None,          [A, A, A, N]),
    key("GET",    "/secrets/{name}",              Resource::Secret,        [A, A, A, N]),
    key("PUT",    "/secrets/{name}",              Resource::Secret,        [A, A, O, N]),
    key("DELETE", "/secrets/{name}",              Resource::Secret,        [A, A, O, N]),
    key("POST",   "/secrets/{name}/reveal",       Resource::Secret,        [A, O, O, N]),
    key("USE",    "/secrets/{name}",              Resource::Secret,        [A, A, A, N]),
    Rule { method: "POST", path: "/executions/{id}/secrets", access: Access::SecretsToken },
];

/// The method of rules that name an action rather than a route.
pub const ACTION_USE: &str = "USE";

/// The rule of a matched route (`path` with or without the `/api/v1` prefix).
pub fn lookup(method: &str, path: &str) -> Option<&'static Rule> {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let method = if method == "HEAD" { "GET" } else { method };
    POLICY.iter().find(|r| r.method == method && r.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_has_exactly_one_rule() {
        let routes: BTreeSet<(String, String)> = crate::api_routes()
            .into_iter()
            .map(|(method, path, _)| (method.to_string(), path.to_string()))
            .collect();
        let rules: Vec<(String, String)> = POLICY
            .iter()
            .filter(|r| r.method != ACTION_USE)
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let unique: BTreeSet<_> = rules.iter().cloned().collect();
        assert_eq!(unique.len(), rules.len(), "duplicate policy rules");
        let missing: Vec<_> = routes.difference(&unique).collect();
        assert!(
            missing.is_empty(),
            "routes without a policy rule: {missing:?}"
        );
        let stale: Vec<_> = unique.difference(&routes).collect();
        assert!(stale.is_empty(), "policy rules without a route: {stale:?}");
    }

    #[test]
    fn only_owners_and_admins_reveal_and_viewers_touch_no_secret() {
        let r = lookup("POST", "/secrets/{name}/reveal").unwrap();
        assert_eq!(r.access.grant(Role::Admin), Grant::All);
        for role in [Role::Operator, Role::Developer] {
            assert_eq!(r.access.grant(role), Grant::Own);
        }
        for r in POLICY.iter().filter(|r| r.path.starts_with("/secrets")) {
            assert_eq!(r.access.grant(Role::Viewer), Grant::Deny, "{r:?}");
        }
        assert!(lookup(ACTION_USE, "/secrets/{name}").is_some());
    }

    #[test]
    fn lookup_normalises() {
        assert!(lookup("HEAD", "/api/v1/health").is_some());
        assert!(lookup("GET", "/executions/{id}").is_some());
        assert!(lookup("PUT", "/executions/{id}").is_none());
        let r = lookup("DELETE", "/executions/{id}").unwrap();
        assert_eq!(r.access.grant(Role::Developer), Grant::Own);
        assert_eq!(r.access.grant(Role::Viewer), Grant::Deny);
    }

    #[test]
    fn admins_and_operators_manage_images_everyone_reads_them() {
        for (method, path) in [("POST", "/images/register"), ("DELETE", "/images/{*id}")] {
            let r = lookup(method, path).unwrap();
            assert_eq!(r.access.grant(Role::Admin), Grant::All);
            assert_eq!(r.access.grant(Role::Operator), Grant::All);
            assert_eq!(r.access.grant(Role::Developer), Grant::Deny);
            assert_eq!(r.access.grant(Role::Viewer), Grant::Deny);
        }
        for path in ["/images", "/images/{*id}"] {
            let r = lookup("GET", path).unwrap();
            for role in Role::ALL {
                assert_eq!(r.access.grant(role), Grant::All, "{role:?} {path}");
            }
        }
    }

    #[test]
    fn only_admins_manage_users_and_viewers_never_write() {
        for r in POLICY {
            if r.path.starts_with("/users/") && r.method == "POST" && r.path != "/users/rotate-key"
            {
                for role in [Role::Operator, Role::Developer, Role::Viewer] {
                    assert_eq!(r.access.grant(role), Grant::Deny, "{r:?}");
                }
            }
            if r.method != "GET" && r.path != "/users/rotate-key" {
                assert_eq!(r.access.grant(Role::Viewer), Grant::Deny, "{r:?}");
            }
        }
    }
}
