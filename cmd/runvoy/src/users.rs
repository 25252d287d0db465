//! `runvoy users …`, `runvoy claim` and `runvoy trace`.

use anyhow::Context;
use clap::Subcommand;
use runvoy_client::config::{
    Config, ConfigError, ENV_API_KEY, ENV_API_URL, Overrides, Profile, selected_profile,
};
use runvoy_client::proto::{TraceResponse, User};
use runvoy_client::{Client, ClientError};

use crate::Output;
use crate::commands::print_json;
use crate::ui::Ui;
use crate::util::format_time;

/// `runvoy users` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Create a user (admin) and print the one-time claim token to hand to them.
    Create {
        /// The user's email.
        email: String,
        /// admin, operator, developer or viewer.
        #[arg(short, long)]
        role: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List users (admin, operator).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Revoke a user's API key (admin); it fails from its next request.
    Revoke {
        /// The user's email.
        email: String,
    },
    /// Change a user's role (admin); it applies from their next request.
    SetRole {
        /// The user's email.
        email: String,
        /// admin, operator, developer or viewer.
        role: String,
    },
    /// Replace your own API key; the old one stops working at once. The new key is written to
    /// the config file when the old one came from it, else printed once.
    RotateKey,
}

/// Runs a `runvoy users` subcommand.
pub async fn run(o: &Overrides, cmd: UsersCmd, ui: Ui) -> anyhow::Result<i32> {
    let cfg = Config::load_with(o)?;
    let client = Client::from_config(&cfg)?;
    match cmd {
        UsersCmd::Create {
            email,
            role,
            output,
        } => {
            let r = client
                .create_user(&email, &role)
                .await
                .with_context(|| format!("cannot create user {email}"))?;
            match output {
                Output::Json => print_json(&r)?,
                Output::Text => {
                    ui.success(&format!("created {} {}", r.user.role, r.user.email));
                    outln!("{}", r.claim_token);
                    ui.info(&format!(
                        "share this with the user: runvoy claim {} --api-url {}",
                        r.claim_token,
                        server_url(&client)
                    ));
                    ui.info("the token works once and expires in 15 minutes");
                }
            }
        }
        UsersCmd::List { output } => {
            let r = client.list_users().await.context("cannot list users")?;
            match output {
                Output::Json => print_json(&r)?,
                Output::Text => out!("{}", users_table(&r.users)),
            }
        }
        UsersCmd::Revoke { email } => {
            let r = client
                .revoke_user(&email)
                .await
                .with_context(|| format!("cannot revoke {email}"))?;
            ui.success(&format!("{}: {}", r.email, r.message));
        }
        UsersCmd::SetRole { email, role } => {
            let r = client
                .set_user_role(&email, &role)
                .await
                .with_context(|| format!("cannot change the role of {email}"))?;
            ui.success(&format!("{}: {}", r.email, r.message));
        }
        UsersCmd::RotateKey => {
            let r = client.rotate_key().await.context("cannot rotate the key")?;
            match key_from_file(o, &cfg) {
                Some((path, profile)) => {
                    let mut file = Config::read_optional(&path)?.unwrap_or_default();
                    let mut p = file.profile(profile.as_deref()).unwrap_or_default();
                    p.api_key = r.api_key.clone();
                    file.set_profile(profile.as_deref(), p);
                    if let Err(e) = file.write(&path) {
                        outln!("{}", r.api_key);
                        return Err(anyhow::Error::new(e)
                            .context("the key was rotated (new key above) but not saved"));
                    }
                    ui.success(&format!(
                        "key of {} rotated and saved to {}",
                        r.user_email,
                        path.display()
                    ));
                }
                None => {
                    outln!("{}", r.api_key);
                    ui.success(&format!(
                        "key of {} rotated; the new key (above) is shown only now",
                        r.user_email
                    ));
                }
            }
        }
    }
    Ok(0)
}

/// The config file path and profile when the key in use came from it (not a flag or the
/// environment).
fn key_from_file(o: &Overrides, cfg: &Config) -> Option<(std::path::PathBuf, Option<String>)> {
    let from_env = std::env::var(ENV_API_KEY).is_ok_and(|v| !v.trim().is_empty());
    if o.api_key.is_some() || from_env {
        return None;
    }
    let profile = selected_profile(o).ok()?;
    let path = Config::default_path()?;
    let file = Config::read_optional(&path).ok()??;
    let p = file.profile(profile.as_deref())?;
    (p.api_key.trim() == cfg.api_key).then_some((path, profile))
}

fn server_url(c: &Client) -> String {
    c.api_url()
        .as_str()
        .trim_end_matches('/')
        .trim_end_matches("/api/v1")
        .to_owned()
}

/// `runvoy claim TOKEN`: redeems a claim token and writes the key to the config file.
pub async fn claim(o: &Overrides, token: &str, force: bool, ui: Ui) -> anyhow::Result<i32> {
    let profile = selected_profile(o)?;
    let path = Config::default_path().ok_or(ConfigError::NoPath)?;
    // A broken file is replaced rather than blocking the claim.
    let mut file = Config::read_optional(&path)
        .ok()
        .flatten()
        .unwrap_or_default();
    let existing = file.profile(profile.as_deref()).unwrap_or_default();
    let url = o
        .api_url
        .clone()
        .or_else(|| std::env::var(ENV_API_URL).ok())
        .filter(|u| !u.trim().is_empty())
        .or_else(|| Some(existing.api_endpoint.clone()).filter(|u| !u.trim().is_empty()))
        // A new profile is usually another key on the same server.
        .unwrap_or_else(|| file.api_endpoint.clone());
    if url.trim().is_empty() {
        anyhow::bail!("no server URL: pass --api-url URL (the one the admin gave you)");
    }
    // Asked before the token is spent: a claimed key that cannot be saved is lost.
    crate::commands::confirm_key_overwrite(&path, &existing.api_key, None, force)?;
    let r = runvoy_client::claim(&url, token)
        .await
        .map_err(|e| match &e {
            ClientError::Api { status: 409, .. } => anyhow::Error::new(e)
                .context("this token was already used; ask your admin for a new one"),
            ClientError::Api { status: 404, .. } => anyhow::Error::new(e)
                .context("the token is unknown or expired (they last 15 minutes)"),
            _ => anyhow::Error::new(e).context("cannot claim the key"),
        })?;
    file.set_profile(
        profile.as_deref(),
        Profile {
            api_endpoint: url.trim().to_owned(),
            api_key: r.api_key.clone(),
            web_url: existing.web_url,
        },
    );
    if let Err(e) = file.write(&path) {
        outln!("{}", r.api_key);
        return Err(anyhow::Error::new(e).context(
            "the key was claimed (above, shown only now) but could not be saved; run `runvoy configure`",
        ));
    }
    let place = match &profile {
        Some(p) => format!("profile {p} of {}", path.display()),
        None => path.display().to_string(),
    };
    ui.success(&format!(
        "API key of {} claimed and saved to {place}",
        r.user_email
    ));
    Ok(0)
}

/// `runvoy trace REQUEST_ID` (admin).
pub async fn trace(client: &Client, id: &str, output: Output) -> anyhow::Result<i32> {
    let t = client
        .trace(id)
        .await
        .with_context(|| format!("cannot trace request {id}"))?;
    match output {
        Output::Json => print_json(&t)?,
        Output::Text => out!("{}", trace_text(&t)),
    }
    Ok(0)
}

/// A plain-text table: columns padded to their widest cell, two spaces apart.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let mut push = |cells: &[String]| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i != last {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.push('\n');
    };
    push(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        push(r);
    }
    s
}

fn users_table(users: &[User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.email.clone(),
                u.role.clone(),
                u.status.clone(),
                format_time(&u.created_at),
                u.last_used
                    .as_deref()
                    .map(format_time)
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    table(&["EMAIL", "ROLE", "STATUS", "CREATED", "LAST USED"], &rows)
}

fn trace_text(t: &TraceResponse) -> String {
    let mut s = format!(
        "request {}\n\nserver log ({} lines)\n",
        t.request_id,
        t.logs.len()
    );
    for l in &t.logs {
        let time = l.fields["time"].as_str().unwrap_or_default();
        let extra: Vec<String> = l
            .fields
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            "time" | "level" | "message" | "target" | "request_id"
                        )
                    })
                    .map(|(k, v)| match v.as_str() {
                        Some(x) => format!("{k}={x}"),
                        None => format!("{k}={v}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "  {time} {:5} {} {}\n",
            l.level,
            l.message,
            extra.join(" ")
        ));
    }
    let ex = &t.related_resources.executions;
    s.push_str(&format!("\nexecutions ({})\n", ex.len()));
    for e in ex {
        s.push_str(&format!(
            "  {} {} by {}: {}\n",
            e.execution_id, e.status, e.created_by, e.command
        ));
    }
    let us = &t.related_resources.users;
    s.push_str(&format!("\nusers ({})\n", us.len()));
    for u in us {
        s.push_str(&format!("  {} {} {}\n", u.email, u.role, u.status));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_table_has_a_row_per_user() {
        let u = User {
            email: "a@b.c".into(),
            role: "viewer".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            revoked: false,
            status: "active".into(),
            last_used: None,
            claim_expires_at: None,
            created_by: "runvoyd".into(),
            created_by_request_id: String::new(),
            modified_by_request_id: String::new(),
        };
        let t = users_table(&[u]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("EMAIL"));
        assert!(lines[1].contains("a@b.c") && lines[1].contains("never"));
    }
}
