//! `runvoy images …`: the image registry.

use anyhow::Context;
use clap::Subcommand;
use runvoy_client::Client;
use runvoy_client::proto::{ImageInfo, RegisterImageRequest};

use crate::Output;
use crate::commands::print_json;
use crate::ui::Ui;
use crate::users::table;
use crate::util::{format_time, parse_timeout};

/// `runvoy images` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCmd {
    /// Register an image (admin, operator). Registering the same image with the same settings
    /// again changes nothing. The first image registered becomes the default.
    Register {
        /// Image reference: [REGISTRY/]NAME[:TAG][@sha256:DIGEST].
        image: String,
        /// CPU of runs in this image, in cores (fractions allowed).
        #[arg(long)]
        cpu: Option<f64>,
        /// Memory of runs in this image, in MiB.
        #[arg(long)]
        memory: Option<u64>,
        /// Timeout of runs in this image that set none: 90, 30s, 10m, 1h30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
        timeout: Option<u64>,
        /// Service account the runs get from compute (Cloud Run).
        #[arg(long)]
        service_account: Option<String>,
        /// Make it the default image (runs that name no image use it).
        #[arg(long)]
        set_default: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List registered images.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show one image, by image id or by a name (name:tag) that matches one image.
    Show {
        /// Image id, or a reference such as alpine:3.19.
        image: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Unregister an image (admin, operator), by image id or a name that matches one image.
    /// Unregistering the default image leaves no default.
    Unregister {
        /// Image id, or a reference such as alpine:3.19.
        image: String,
    },
}

/// Runs a `runvoy images` subcommand.
pub async fn run(client: &Client, cmd: ImagesCmd, ui: Ui) -> anyhow::Result<i32> {
    match cmd {
        ImagesCmd::Register {
            image,
            cpu,
            memory,
            timeout,
            service_account,
            set_default,
            output,
        } => {
            let req = RegisterImageRequest {
                image: image.clone(),
                cpu,
                memory,
                timeout: timeout.filter(|t| *t > 0),
                service_account,
                is_default: set_default.then_some(true),
            };
            let (info, created) = client
                .register_image(&req)
                .await
                .with_context(|| format!("cannot register image {image}"))?;
            match output {
                Output::Json => print_json(&info)?,
                Output::Text => {
                    let what = if created {
                        "registered"
                    } else {
                        "already registered"
                    };
                    let default = if info.is_default { " (default)" } else { "" };
                    ui.success(&format!("{what} {}{default}", info.image));
                    outln!("{}", info.image_id);
                }
            }
        }
        ImagesCmd::List { output } => {
            let r = client.list_images().await.context("cannot list images")?;
            match output {
                Output::Json => print_json(&r)?,
                Output::Text => out!("{}", images_table(&r.images)),
            }
        }
        ImagesCmd::Show { image, output } => {
            let i = client
                .get_image(&image)
                .await
                .with_context(|| format!("cannot show image {image}"))?;
            match output {
                Output::Json => print_json(&i)?,
                Output::Text => out!("{}", image_text(&i)),
            }
        }
        ImagesCmd::Unregister { image } => {
            let r = client
                .unregister_image(&image)
                .await
                .with_context(|| format!("cannot unregister image {image}"))?;
            ui.success(&format!("{}: {}", r.image_id, r.message));
        }
    }
    Ok(0)
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn images_table(images: &[ImageInfo]) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.image_id.clone(),
                i.image.clone(),
                or_dash(i.cpu),
                or_dash(i.memory),
                or_dash(i.timeout),
                if i.is_default { "yes" } else { "" }.into(),
            ]
        })
        .collect();
    table(
        &[
            "IMAGE ID",
            "IMAGE",
            "CPU",
            "MEMORY MIB",
            "TIMEOUT S",
            "DEFAULT",
        ],
        &rows,
    )
}

fn image_text(i: &ImageInfo) -> String {
    let rows = [
        ("Image ID", i.image_id.clone()),
        ("Image", i.image.clone()),
        ("Registry", i.registry.clone()),
        ("Name", i.image_name.clone()),
        ("Tag", i.image_tag.clone()),
        ("CPU (cores)", or_dash(i.cpu)),
        ("Memory (MiB)", or_dash(i.memory)),
        ("Timeout (s)", or_dash(i.timeout)),
        ("Service account", or_dash(i.service_account.clone())),
        ("Default", if i.is_default { "yes" } else { "no" }.into()),
        ("Created by", i.created_by.clone()),
        ("Created", format_time(&i.created_at)),
    ];
    rows.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(default: bool) -> ImageInfo {
        ImageInfo {
            image_id: "alpine:3.19-0123abcd".into(),
            image: "alpine:3.19".into(),
            registry: "docker.io".into(),
            image_name: "alpine".into(),
            image_tag: "3.19".into(),
            cpu: Some(0.5),
            memory: None,
            timeout: Some(60),
            service_account: None,
            is_default: default,
            created_by: "ops@x.io".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            created_by_request_id: String::new(),
            modified_by_request_id: String::new(),
        }
    }

    #[test]
    fn table_and_details() {
        let t = images_table(&[info(true)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("IMAGE ID"));
        assert!(lines[1].starts_with("alpine:3.19-0123abcd"));
        assert!(lines[1].contains("0.5") && lines[1].ends_with("yes"), "{t}");
        let d = image_text(&info(false));
        assert!(d.contains("Registry         docker.io"), "{d}");
        assert!(d.contains("Memory (MiB)     -"), "{d}");
        assert!(d.contains("Default          no"), "{d}");
    }
}
