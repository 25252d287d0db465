//! Typed client for the runvoy API (`docs/API.md`), shared by the `runvoy` CLI, the integration
//! tests and the bench tool.
//!
//! * [`Client`]: one method per REST route, errors as [`ClientError`].
//! * [`LogFollower`]: the WebSocket log stream, de-duplicated and resumed across dropped
//!   connections.
//! * [`config`]: the CLI's `~/.runvoy/config.yaml` and its environment overrides.

#![warn(missing_docs)]

pub mod config;
mod error;
mod follow;

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use url::Url;

pub mod playbook;
pub use error::ClientError;

/// `FILE:LINE:COLUMN: message` for a YAML error (`FILE: message` when it has no location),
/// followed by the offending lines only when `excerpt` (never for files holding secrets).
pub fn yaml_error(file: &std::path::Path, e: &serde_saphyr::Error, excerpt: bool) -> String {
    let bare = e.without_snippet();
    let mut message = bare
        .render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        })
        .trim()
        .to_string();
    let at = match bare.location() {
        Some(l) if l.line() > 0 => {
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            if let Some(m) = message.strip_suffix(&suffix) {
                message = m.to_string();
            }
            format!(":{}:{}", l.line(), l.column())
        }
        _ => String::new(),
    };
    let mut out = format!("{}{at}: {message}", file.display());
    if excerpt && !std::ptr::eq(bare, e) {
        let name = file.display().to_string();
        let shown = e.render_with_options(serde_saphyr::render_options! {
            source_name: Some(name.as_str()),
        });
        // The excerpt: the rendered snippet without its first (message) line.
        if let Some((_, rest)) = shown.split_once('\n') {
            out.push('\n');
            out.push_str(rest.trim_end());
        }
    }
    out
}
pub use follow::{FollowOptions, LogFollower, StreamEvent};
pub use runvoy_proto as proto;
use runvoy_proto::{
    ClaimResponse, CreateUserRequest, CreateUserResponse, Execution, ExecutionList, HealthResponse,
    KillResponse, LogsResponse, RevokeUserRequest, RunRequest, RunResponse, SetRoleRequest, Status,
    TraceResponse, UserChangeResponse, UserList,
};

/// Query of `GET /api/v1/executions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Page size (server default 50, max 1000) when set.
    pub limit: Option<u32>,
    /// Only executions in one of these statuses; all when empty.
    pub status: Vec<Status>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only executions created by this user (email).
    pub user: Option<String>,
    /// Only executions created since: an RFC 3339 time or a duration back from now (`1h`).
    pub since: Option<String>,
}

/// Result of `DELETE /api/v1/executions/{id}`.
#[derive(Debug, Clone)]
pub enum KillOutcome {
    /// The kill was started (status TERMINATING).
    Started(KillResponse),
    /// The execution had already finished; nothing was done. The answer gives its status
    /// (`None` from servers that answer 204 without a body).
    AlreadyTerminal(Option<KillResponse>),
}

/// A client for one runvoy server and API key. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Always ends with `/api/v1/` so relative joins land under it.
    api: Url,
}

impl Client {
    /// Creates a client for `base_url` (e.g. `http://127.0.0.1:8080`; a trailing `/api/v1` is
    /// accepted too) authenticating with `api_key`.
    pub fn new(base_url: &str, api_key: &str) -> Result<Client, ClientError> {
        let api = api_base(base_url)?;
        let mut headers = HeaderMap::new();
        let mut key = HeaderValue::from_str(api_key)
            .map_err(|_| ClientError::InvalidInput("API key contains invalid characters".into()))?;
        key.set_sensitive(true);
        headers.insert("x-api-key", key);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("runvoy-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Every route answers quickly (runs are asynchronous), so a long wait means trouble.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::InvalidInput(error::full_chain(&e)))?;
        Ok(Client { http, api })
    }

    /// Creates a client from a resolved [`config::Config`].
    pub fn from_config(cfg: &config::Config) -> Result<Client, ClientError> {
        Client::new(&cfg.api_endpoint, &cfg.api_key)
    }

    /// The API root, ending with `/api/v1/`.
    pub fn api_url(&self) -> &Url {
        &self.api
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.send(self.http.get(self.url("health")?)).await
    }

    /// `POST /run`: starts an execution.
    pub async fn run(&self, req: &RunRequest) -> Result<RunResponse, ClientError> {
        self.send(self.http.post(self.url("run")?).json(req)).await
    }

    /// `GET /executions/{id}`.
    pub async fn get_execution(&self, id: &str) -> Result<Execution, ClientError> {
        let url = self.exec_url(id, &[])?;
        self.send(self.http.get(url)).await
    }

    /// `GET /executions`, newest first.
    pub async fn list_executions(&self, q: &ListQuery) -> Result<ExecutionList, ClientError> {
        let mut url = self.url("executions")?;
        {
            let mut qp = url.query_pairs_mut();
            if let Some(l) = q.limit {
                qp.append_pair("limit", &l.to_string());
            }
            if !q.status.is_empty() {
                let s: Vec<&str> = q.status.iter().map(|s| s.as_str()).collect();
                qp.append_pair("status", &s.join(","));
            }
            if let Some(u) = &q.user {
                qp.append_pair("user", u);
            }
            if let Some(s) = &q.since {
                qp.append_pair("since", s);
            }
            if let Some(c) = &q.cursor {
                qp.append_pair("cursor", c);
            }
        }
        strip_empty_query(&mut url);
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(ClientError::from_reqwest)?;
        let next_cursor = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_cursor_of_link);
        let executions: Vec<Execution> = decode(resp).await?;
        Ok(ExecutionList {
            executions,
            next_cursor,
        })
    }

    /// `DELETE /executions/{id}`: requests a kill.
    pub async fn kill(&self, id: &str) -> Result<KillOutcome, ClientError> {
        let url = self.exec_url(id, &[])?;
        let resp = self
            .http
            .delete(url)
            .send()
            .await
            .map_err(ClientError::from_reqwest)?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(KillOutcome::AlreadyTerminal(None));
        }
        let k: KillResponse = decode(resp).await?;
        Ok(if k.status.is_terminal() {
            KillOutcome::AlreadyTerminal(Some(k))
        } else {
            KillOutcome::Started(k)
        })
    }

    /// `GET /executions/{id}/logs`: records with `seq > after_seq`, at most `limit` of them
    /// (server default when `None`).
    pub async fn logs_page(
        &self,
        id: &str,
        after_seq: u64,
        limit: Option<u32>,
    ) -> Result<LogsResponse, ClientError> {
        let mut url = self.exec_url(id, &["logs"])?;
        {
            let mut qp = url.query_pairs_mut();
            qp.append_pair("after_seq", &after_seq.to_string());
            if let Some(l) = limit {
                qp.append_pair("limit", &l.to_string());
            }
        }
        self.send(self.http.get(url)).await
    }

    /// `POST /health/reconcile` (admin): runs a reconcile sweep now and returns its report.
    pub async fn reconcile(&self) -> Result<runvoy_proto::ReconcileReport, ClientError> {
        let r: runvoy_proto::ReconcileResponse = self
            .send(self.http.post(self.url("health/reconcile")?))
            .await?;
        Ok(r.report)
    }

    /// `GET /health/reports` (admin): the most recent sweep reports, newest first.
    pub async fn reconcile_reports(
        &self,
    ) -> Result<Vec<runvoy_proto::ReconcileReport>, ClientError> {
        let r: runvoy_proto::ReconcileReports = self
            .send(self.http.get(self.url("health/reports")?))
            .await?;
        Ok(r.reports)
    }

    /// `GET /users/me`: the caller's own user (email and role).
    pub async fn me(&self) -> Result<runvoy_proto::User, ClientError> {
        self.send(self.http.get(self.url("users/me")?)).await
    }

    /// `GET /users` (admin, operator): every user, sorted by email.
    pub async fn list_users(&self) -> Result<UserList, ClientError> {
        self.send(self.http.get(self.url("users")?)).await
    }

    /// `POST /users/create` (admin): a pending user and its one-time claim token.
    pub async fn create_user(
        &self,
        email: &str,
        role: &str,
    ) -> Result<CreateUserResponse, ClientError> {
        let body = CreateUserRequest {
            email: email.to_owned(),
            role: role.to_owned(),
        };
        self.send(self.http.post(self.url("users/create")?).json(&body))
            .await
    }

    /// `POST /users/revoke` (admin): the user's key stops working at once.
    pub async fn revoke_user(&self, email: &str) -> Result<UserChangeResponse, ClientError> {
        let body = RevokeUserRequest {
            email: email.to_owned(),
        };
        self.send(self.http.post(self.url("users/revoke")?).json(&body))
            .await
    }

    /// `POST /users/set-role` (admin): effective from the user's next request.
    pub async fn set_user_role(
        &self,
        email: &str,
        role: &str,
    ) -> Result<UserChangeResponse, ClientError> {
        let body = SetRoleRequest {
            email: email.to_owned(),
            role: role.to_owned(),
        };
        self.send(self.http.post(self.url("users/set-role")?).json(&body))
            .await
    }

    /// `POST /users/rotate-key`: a new key for the caller; this client's key stops working.
    pub async fn rotate_key(&self) -> Result<ClaimResponse, ClientError> {
        self.send(self.http.post(self.url("users/rotate-key")?))
            .await
    }

    /// `GET /trace/{request_id}` (admin): what a request touched and its server log lines.
    pub async fn trace(&self, request_id: &str) -> Result<TraceResponse, ClientError> {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .map_err(|_| ClientError::InvalidInput("base URL cannot have a path".into()))?
            .pop_if_empty()
            .push("trace")
            .push(request_id);
        self.send(self.http.get(url)).await
    }

    /// `POST /images/register` (admin, operator): the image as stored, and whether it is new
    /// (201) rather than registered before with the same configuration (200).
    pub async fn register_image(
        &self,
        req: &runvoy_proto::RegisterImageRequest,
    ) -> Result<(runvoy_proto::ImageInfo, bool), ClientError> {
        let resp = self
            .http
            .post(self.url("images/register")?)
            .json(req)
            .send()
            .await
            .map_err(ClientError::from_reqwest)?;
        let created = resp.status() == reqwest::StatusCode::CREATED;
        Ok((decode(resp).await?, created))
    }

    /// `GET /images`: every registered image, sorted by id.
    pub async fn list_images(&self) -> Result<runvoy_proto::ImageList, ClientError> {
        self.send(self.http.get(self.url("images")?)).await
    }

    /// `GET /images/{id}`: one image, by id or by a reference matching exactly one.
    pub async fn get_image(&self, id: &str) -> Result<runvoy_proto::ImageInfo, ClientError> {
        self.send(self.http.get(self.image_url(id)?)).await
    }

    /// `DELETE /images/{id}` (admin, operator).
    pub async fn unregister_image(
        &self,
        id: &str,
    ) -> Result<runvoy_proto::UnregisterImageResponse, ClientError> {
        self.send(self.http.delete(self.image_url(id)?)).await
    }

    /// Creates a secret (`POST /secrets`).
    pub async fn create_secret(
        &self,
        req: &runvoy_proto::CreateSecretRequest,
    ) -> Result<runvoy_proto::SecretInfo, ClientError> {
        self.send(self.http.post(self.url("secrets")?).json(req))
            .await
    }

    /// Every secret's metadata.
    pub async fn list_secrets(&self) -> Result<runvoy_proto::SecretList, ClientError> {
        self.send(self.http.get(self.url("secrets")?)).await
    }

    /// One secret's metadata.
    pub async fn get_secret(&self, name: &str) -> Result<runvoy_proto::SecretInfo, ClientError> {
        self.send(self.http.get(self.secret_url(name, &[])?)).await
    }

    /// The value of a secret (owner or admin only; audited).
    pub async fn reveal_secret(
        &self,
        name: &str,
    ) -> Result<runvoy_proto::RevealedSecret, ClientError> {
        self.send(self.http.post(self.secret_url(name, &["reveal"])?))
            .await
    }

    /// Changes a secret.
    pub async fn update_secret(
        &self,
        name: &str,
        req: &runvoy_proto::UpdateSecretRequest,
    ) -> Result<runvoy_proto::SecretInfo, ClientError> {
        self.send(self.http.put(self.secret_url(name, &[])?).json(req))
            .await
    }

    /// Deletes a secret.
    pub async fn delete_secret(
        &self,
        name: &str,
    ) -> Result<runvoy_proto::DeleteSecretResponse, ClientError> {
        self.send(self.http.delete(self.secret_url(name, &[])?))
            .await
    }

    fn secret_url(&self, name: &str, rest: &[&str]) -> Result<Url, ClientError> {
        if name.is_empty() {
            return Err(ClientError::InvalidInput("empty secret name".into()));
        }
        let mut url = self.api.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| ClientError::InvalidInput("base URL cannot have a path".into()))?;
            segs.pop_if_empty().push("secrets").push(name);
            segs.extend(rest);
        }
        Ok(url)
    }

    /// Follows the logs of `id` over the WebSocket from record `after_seq + 1`. Nothing is
    /// connected until the first [`LogFollower::next`].
    pub fn follow_logs(&self, id: &str, after_seq: u64) -> LogFollower {
        LogFollower::new(self.clone(), id, after_seq, FollowOptions::default())
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.api
            .join(path)
            .map_err(|e| ClientError::InvalidInput(e.to_string()))
    }

    fn exec_url(&self, id: &str, rest: &[&str]) -> Result<Url, ClientError> {
        if id.is_empty() {
            return Err(ClientError::InvalidInput("empty execution id".into()));
        }
        let mut url = self.api.clone();
        {
            // Segment-wise so an odd id is escaped rather than changing the path.
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| ClientError::InvalidInput("base URL cannot have a path".into()))?;
            segs.pop_if_empty().push("executions").push(id);
            segs.extend(rest);
        }
        Ok(url)
    }

    fn image_url(&self, id: &str) -> Result<Url, ClientError> {
        if id.is_empty() {
            return Err(ClientError::InvalidInput("empty image id".into()));
        }
        let mut url = self.api.clone();
        // One segment: the '/' of a reference is escaped (%2F), which the server decodes.
        url.path_segments_mut()
            .map_err(|_| ClientError::InvalidInput("base URL cannot have a path".into()))?
            .pop_if_empty()
            .push("images")
            .push(id);
        Ok(url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = rb.send().await.map_err(ClientError::from_reqwest)?;
        decode(resp).await
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(ClientError::from_reqwest)?;
    if !status.is_success() {
        return Err(ClientError::from_response(status.as_u16(), &body));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ClientError::Protocol(format!("unexpected {} response body: {e}", status.as_u16()))
    })
}

/// The `cursor` query parameter of the `rel="next"` target of a `Link` header value. Targets
/// may contain commas (`status=RUNNING,FAILED`), so links are found by their `<…>`, not by
/// splitting on commas.
fn next_cursor_of_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let (target, tail) = (&after[..end], &after[end + 1..]);
        let params_end = tail.find('<').unwrap_or(tail.len());
        let is_next = tail[..params_end].split([';', ',']).any(|p| {
            let p = p.replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            let url = Url::parse("http://base").ok()?.join(target).ok()?;
            return url
                .query_pairs()
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.into_owned());
        }
        rest = &tail[params_end..];
    }
    None
}

fn strip_empty_query(url: &mut Url) {
    if url.query() == Some("") {
        url.set_query(None);
    }
}

/// `POST /api/v1/claim/{token}` on `base_url` (no API key needed): the new API key, once.
pub async fn claim(base_url: &str, token: &str) -> Result<ClaimResponse, ClientError> {
    let mut url = api_base(base_url)?;
    url.path_segments_mut()
        .map_err(|_| ClientError::InvalidInput("base URL cannot have a path".into()))?
        .pop_if_empty()
        .push("claim")
        .push(token.trim());
    let http = reqwest::Client::builder()
        .user_agent(concat!("runvoy-client/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ClientError::InvalidInput(error::full_chain(&e)))?;
    let resp = http
        .post(url)
        .send()
        .await
        .map_err(ClientError::from_reqwest)?;
    decode(resp).await
}

/// Normalises a user-supplied server URL to its `/api/v1/` root.
fn api_base(base_url: &str) -> Result<Url, ClientError> {
    let mut url = Url::parse(base_url.trim())
        .map_err(|e| ClientError::InvalidInput(format!("invalid API URL {base_url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::InvalidInput(format!(
            "invalid API URL {base_url:?}: scheme must be http or https"
        )));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(ClientError::InvalidInput(format!(
            "invalid API URL {base_url:?}: no host"
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_string();
    let path = path.strip_suffix("/api/v1").unwrap_or(&path);
    url.set_path(&format!("{path}/api/v1/"));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_normalises() {
        for (i, o) in [
            ("http://h:1", "http://h:1/api/v1/"),
            ("http://h:1/", "http://h:1/api/v1/"),
            ("http://h:1/api/v1", "http://h:1/api/v1/"),
            ("https://h/prefix/api/v1/", "https://h/prefix/api/v1/"),
            ("https://h/prefix", "https://h/prefix/api/v1/"),
        ] {
            assert_eq!(api_base(i).unwrap().as_str(), o, "{i}");
        }
        assert!(api_base("ftp://h").is_err());
        assert!(api_base("not a url").is_err());
    }

    #[test]
    fn link_header_next_cursor() {
        assert_eq!(
            next_cursor_of_link(
                r#"</api/v1/executions?limit=2&status=RUNNING&cursor=17-abc>; rel="next""#
            )
            .as_deref(),
            Some("17-abc")
        );
        assert_eq!(
            next_cursor_of_link(
                r#"<https://h/x?a=1>; rel="prev", <https://h/x?cursor=9-f>; rel=next"#
            )
            .as_deref(),
            Some("9-f")
        );
        assert_eq!(next_cursor_of_link(r#"</x?cursor=1-a>; rel="prev""#), None);
        assert_eq!(
            next_cursor_of_link(r#"</x?status=RUNNING,FAILED&cursor=2-b>; rel="next""#).as_deref(),
            Some("2-b")
        );
        assert_eq!(next_cursor_of_link("garbage"), None);
    }

    #[test]
    fn exec_url_escapes_id() {
        let c = Client::new("http://h:1", "k").unwrap();
        assert_eq!(
            c.exec_url("a/b", &["logs"]).unwrap().as_str(),
            "http://h:1/api/v1/executions/a%2Fb/logs"
        );
    }
}

#[cfg(test)]
mod yaml_tests {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        a: u32,
        b: Vec<String>,
    }

    #[test]
    fn yaml_errors_point_at_line_and_column() {
        let e = serde_saphyr::from_str::<T>("a: 1\nb:\n  - x\n  - [oops\n").unwrap_err();
        let f = std::path::Path::new(".runvoy/x.yml");
        assert_eq!(
            super::yaml_error(f, &e, false),
            ".runvoy/x.yml:4:5: unclosed bracket '['"
        );
        let shown = super::yaml_error(f, &e, true);
        assert!(
            shown.starts_with(".runvoy/x.yml:4:5: unclosed bracket '['\n"),
            "{shown}"
        );
        assert!(shown.contains("4 |   - [oops"), "{shown}");
        let e = serde_saphyr::from_str::<T>("a: nope\nb: []\n").unwrap_err();
        assert_eq!(
            super::yaml_error(f, &e, false),
            ".runvoy/x.yml:1:4: invalid u32"
        );
    }
}
