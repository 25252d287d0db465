//! `runvoy health reconcile` and `runvoy health reports`: the reconciler's reports.

use anyhow::Context;
use clap::Subcommand;
use runvoy_client::Client;
use runvoy_client::proto::ReconcileReport;

use crate::Output;
use crate::ui::Ui;

/// `runvoy health` subcommands.
#[derive(Debug, Subcommand)]
pub enum HealthCmd {
    /// Run a reconcile sweep now (admin) and print its report.
    Reconcile {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the most recent sweep reports, newest first (admin).
    Reports {
        /// How many reports to show.
        #[arg(short = 'n', long, default_value_t = 5)]
        limit: usize,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Runs a `runvoy health` subcommand.
pub async fn run(client: &Client, cmd: HealthCmd, ui: Ui) -> anyhow::Result<i32> {
    match cmd {
        HealthCmd::Reconcile { output } => {
            ui.info("running a reconcile sweep…");
            let r = client.reconcile().await.context("cannot reconcile")?;
            match output {
                Output::Json => crate::commands::print_json(&r)?,
                Output::Text => {
                    ui.success("reconcile done");
                    out!("{}", report_text(&r));
                }
            }
            Ok(if r.error_count > 0 { 1 } else { 0 })
        }
        HealthCmd::Reports { limit, output } => {
            let mut rs = client
                .reconcile_reports()
                .await
                .context("cannot read reconcile reports")?;
            rs.truncate(limit);
            match output {
                Output::Json => crate::commands::print_json(&rs)?,
                Output::Text if rs.is_empty() => ui.info("no reconcile report yet"),
                Output::Text => {
                    let texts: Vec<String> = rs.iter().map(report_text).collect();
                    out!("{}", texts.join("\n"));
                }
            }
            Ok(0)
        }
    }
}

/// Counts on one line, then a table of issues (like the Go runvoy's report).
pub fn report_text(r: &ReconcileReport) -> String {
    let mut s = format!(
        "Reconcile {} ({})\n  checked {}  reconciled {}  finalized {}  killed {}  log records repaired {}\n  orphans {}  workspaces removed {}  purged {}  errors {}\n",
        r.timestamp,
        r.trigger,
        r.checked,
        r.reconciled_count,
        r.finalized,
        r.killed,
        r.log_records_repaired,
        r.orphans,
        r.workspaces_removed,
        r.purged,
        r.error_count
    );
    if r.issues.is_empty() {
        s.push_str("  no issues\n");
        return s;
    }
    let rows: Vec<[String; 4]> = r
        .issues
        .iter()
        .map(|i| {
            let res = if i.resource_id.is_empty() {
                i.resource_type.clone()
            } else {
                format!("{}/{}", i.resource_type, i.resource_id)
            };
            [
                i.severity.to_uppercase(),
                res,
                i.action.clone(),
                i.message.clone(),
            ]
        })
        .collect();
    let head = ["SEVERITY", "RESOURCE", "ACTION", "MESSAGE"];
    let mut w = head.map(str::len);
    for row in &rows {
        for (k, c) in row.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )
    };
    s.push_str(&line(head));
    for row in &rows {
        s.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use runvoy_client::proto::ReconcileIssue;

    #[test]
    fn report_lists_counts_then_issues() {
        let r = ReconcileReport {
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            trigger: "api".into(),
            checked: 2,
            reconciled_count: 1,
            finalized: 1,
            issues: vec![ReconcileIssue {
                severity: "warning".into(),
                resource_type: "execution".into(),
                resource_id: "abc".into(),
                action: "repaired".into(),
                message: "finalised as FAILED".into(),
            }],
            ..Default::default()
        };
        let t = report_text(&r);
        assert!(t.contains("checked 2  reconciled 1  finalized 1"), "{t}");
        assert!(
            t.contains("SEVERITY  RESOURCE       ACTION    MESSAGE"),
            "{t}"
        );
        assert!(t.contains("WARNING   execution/abc  "), "{t}");
    }
}
