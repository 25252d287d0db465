//! `runvoy secrets …`: create, list, get (--reveal), update, delete. Values are read from a
//! prompt without echo, or from standard input when it is not a terminal, never from an
//! argument (which would land in the shell history and in `ps`).

use std::io::{self, BufRead, IsTerminal, Read, Write};

use anyhow::Context;
use clap::Subcommand;
use runvoy_client::Client;
use runvoy_client::proto::{CreateSecretRequest, SecretInfo, UpdateSecretRequest};

use crate::Output;
use crate::commands::print_json;
use crate::ui::Ui;
use crate::users::table;

/// `runvoy secrets` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Create a secret. The value is asked for without echo, or read from standard input
    /// (`printf %s "$TOKEN" | runvoy secrets create github-token GITHUB_TOKEN`).
    Create {
        /// Secret name (letters, digits, '.', '_', '-').
        name: String,
        /// The environment variable runs get the value in.
        key_name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List secrets (names, key names, owners; never values).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a secret; --reveal also prints its value (owner or admin only; audited).
    Get {
        /// Secret name.
        name: String,
        /// Print the value too.
        #[arg(long)]
        reveal: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Change a secret's key name, description or value (--value asks for it like create).
    Update {
        /// Secret name.
        name: String,
        /// New environment variable name.
        #[arg(long)]
        key_name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Set a new value, asked for without echo or read from standard input.
        #[arg(long)]
        value: bool,
    },
    /// Delete a secret.
    Delete {
        /// Secret name.
        name: String,
    },
}

/// Runs a `secrets` subcommand.
pub async fn run(client: &Client, cmd: SecretsCmd, ui: Ui) -> anyhow::Result<i32> {
    match cmd {
        SecretsCmd::Create {
            name,
            key_name,
            description,
            output,
        } => {
            let value = read_value(&format!("Value of secret {name}"))?;
            let s = client
                .create_secret(&CreateSecretRequest {
                    name: name.clone(),
                    key_name,
                    description,
                    value,
                })
                .await
                .with_context(|| format!("cannot create secret {name}"))?;
            match output {
                Output::Json => print_json(&s)?,
                Output::Text => ui.success(&format!(
                    "secret {} created (injected as {} with --secret {})",
                    s.name, s.key_name, s.name
                )),
            }
        }
        SecretsCmd::List { output } => {
            let l = client.list_secrets().await.context("cannot list secrets")?;
            match output {
                Output::Json => print_json(&l)?,
                Output::Text => {
                    let rows: Vec<Vec<String>> = l
                        .secrets
                        .iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                s.key_name.clone(),
                                s.description.clone(),
                                s.created_by.clone(),
                                s.created_at.clone(),
                            ]
                        })
                        .collect();
                    out!(
                        "{}",
                        table(
                            &[
                                "NAME",
                                "KEY NAME",
                                "DESCRIPTION",
                                "CREATED BY",
                                "CREATED AT"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        SecretsCmd::Get {
            name,
            reveal,
            output,
        } => {
            if reveal {
                let r = client
                    .reveal_secret(&name)
                    .await
                    .with_context(|| format!("cannot reveal secret {name}"))?;
                match output {
                    Output::Json => print_json(&r)?,
                    Output::Text => {
                        out!("{}", show(&r.secret));
                        outln!("Value:       {}", r.value);
                    }
                }
            } else {
                let s = client
                    .get_secret(&name)
                    .await
                    .with_context(|| format!("cannot read secret {name}"))?;
                match output {
                    Output::Json => print_json(&s)?,
                    Output::Text => out!("{}", show(&s)),
                }
            }
        }
        SecretsCmd::Update {
            name,
            key_name,
            description,
            value,
        } => {
            if key_name.is_none() && description.is_none() && !value {
                anyhow::bail!("nothing to change: give --key-name, --description or --value");
            }
            let value = if value {
                Some(read_value(&format!("New value of secret {name}"))?)
            } else {
                None
            };
            client
                .update_secret(
                    &name,
                    &UpdateSecretRequest {
                        key_name,
                        description,
                        value,
                    },
                )
                .await
                .with_context(|| format!("cannot update secret {name}"))?;
            ui.success(&format!("secret {name} updated"));
        }
        SecretsCmd::Delete { name } => {
            client
                .delete_secret(&name)
                .await
                .with_context(|| format!("cannot delete secret {name}"))?;
            ui.success(&format!("secret {name} deleted"));
        }
    }
    Ok(0)
}

fn show(s: &SecretInfo) -> String {
    format!(
        "Name:        {}\nKey name:    {}\nDescription: {}\nCreated by:  {}\nCreated at:  {}\n\
         Updated by:  {}\nUpdated at:  {}\n",
        s.name, s.key_name, s.description, s.created_by, s.created_at, s.updated_by, s.updated_at
    )
}

/// The value: from a no-echo prompt on a terminal, else all of standard input (one trailing
/// newline removed, so `echo "$V" |` works like `printf %s "$V" |`).
fn read_value(label: &str) -> anyhow::Result<String> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut v = String::new();
        stdin
            .lock()
            .read_to_string(&mut v)
            .context("cannot read the value from standard input (it must be UTF-8)")?;
        let v = v
            .strip_suffix("\r\n")
            .or_else(|| v.strip_suffix('\n'))
            .unwrap_or(&v)
            .to_owned();
        if v.is_empty() {
            anyhow::bail!("standard input held no value");
        }
        return Ok(v);
    }
    let v = prompt_hidden(&format!("{label}: "))?;
    if v.is_empty() {
        anyhow::bail!("no value given");
    }
    Ok(v)
}

/// Reads a line from the terminal with echo off, restoring the terminal afterwards.
fn prompt_hidden(label: &str) -> anyhow::Result<String> {
    let mut err = io::stderr().lock();
    write!(err, "{label}")?;
    err.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data, filled in by tcgetattr on a valid descriptor.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = unsafe { libc::tcgetattr(fd, &mut old) } == 0;
    if have_tty {
        let mut quiet = old;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: a valid termios for the same descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let res = io::stdin().lock().read_line(&mut line);
    if have_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    res.context("cannot read the value")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
