//! The Go runvoy's own example playbooks (copied unchanged into `fixtures/playbooks`) load,
//! and lookup follows `.runvoy/` then `~/.runvoy/playbooks/`.

use std::fs;
use std::path::{Path, PathBuf};

use runvoy_client::playbook::{self, PlaybookError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/playbooks")
}

#[test]
fn every_go_runvoy_example_loads_unchanged() {
    let entries = playbook::list(&[fixtures()], &[]);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "aws-cli-example",
            "build-caddy-example",
            "opencode-example",
            "pg-restore-example",
            "private-repo-example",
            "terraform-example"
        ]
    );
    for e in &entries {
        let pb = e
            .playbook
            .as_ref()
            .unwrap_or_else(|err| panic!("{}: {err}", e.name));
        assert!(!pb.commands.is_empty(), "{}", e.name);
        assert!(!pb.description.is_empty(), "{}", e.name);
    }
    let get = |n: &str| {
        entries
            .iter()
            .find(|e| e.name == n)
            .unwrap()
            .playbook
            .clone()
            .unwrap()
    };
    let caddy = get("build-caddy-example");
    assert_eq!(caddy.image.as_deref(), Some("docker/library/golang:1.25.4"));
    assert_eq!(caddy.git_ref.as_deref(), Some("master"));
    assert_eq!(caddy.git_path.as_deref(), Some("cmd/caddy/"));
    assert_eq!(caddy.command_line(), "go build && ./caddy version");
    let tf = get("terraform-example");
    assert_eq!(tf.env["TERRAFORM_VERSION"], "1.13.5");
    assert_eq!(tf.env["TF_VAR_injected_variable"], "injected_via_playbook");
    let oc = get("opencode-example");
    assert_eq!(oc.secrets, ["github-token"]);
    assert_eq!(oc.env["GH_VERSION"], "2.83.2");
    let pg = get("pg-restore-example");
    assert_eq!(pg.env.len(), 5);
    assert!(!get("aws-cli-example").commands.is_empty());
}

#[test]
fn the_working_directory_wins_over_home_and_the_config_file_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("proj");
    let home = tmp.path().join("home");
    fs::create_dir_all(cwd.join(".runvoy")).unwrap();
    fs::create_dir_all(home.join(".runvoy/playbooks")).unwrap();
    fs::write(
        cwd.join(".runvoy/deploy.yml"),
        "description: local\ncommands: [make deploy]\nlock: deploy\n",
    )
    .unwrap();
    fs::write(
        home.join(".runvoy/playbooks/deploy.yaml"),
        "description: home\ncommands: [x]\n",
    )
    .unwrap();
    fs::write(
        home.join(".runvoy/playbooks/backup.yaml"),
        "description: home backup\ncommands: [y]\ntimeout: 10m\n",
    )
    .unwrap();
    fs::write(cwd.join(".runvoy/broken.yml"), "commands: [a\n").unwrap();
    fs::write(cwd.join(".runvoy/notes.txt"), "not a playbook").unwrap();
    fs::write(cwd.join(".runvoy/config.yaml"), "api_key: secret\n").unwrap();
    let dirs = playbook::search_dirs(&cwd, Some(&home));
    let skip = [cwd.join(".runvoy/config.yaml")];
    let entries = playbook::list(&dirs, &skip);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["backup", "broken", "deploy"]);
    let deploy = playbook::find(&dirs, &skip, "deploy").unwrap();
    let pb = deploy.playbook.unwrap();
    assert_eq!(pb.description, "local");
    assert_eq!(pb.lock.as_deref(), Some("deploy"));
    assert_eq!(
        playbook::find(&dirs, &skip, "backup")
            .unwrap()
            .playbook
            .unwrap()
            .timeout
            .as_deref(),
        Some("10m")
    );
    let broken = playbook::find(&dirs, &skip, "broken").unwrap();
    let err = broken.playbook.unwrap_err().to_string();
    assert!(err.contains("broken.yml:1:"), "{err}");
    assert!(matches!(
        playbook::find(&dirs, &skip, "nope"),
        Err(PlaybookError::NotFound { .. })
    ));
}
