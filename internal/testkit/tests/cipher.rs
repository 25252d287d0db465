//! runvoyd's secrets cipher at start: the local key file, Cloud KMS (on the in-repo fake), and
//! the refusals when the round trip fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use runvoy_cipher_kms::fake::{FakeKms, KeyState};
use runvoy_testkit::{TestServer, bin};

const KEY: &str = "projects/p/locations/global/keyRings/runvoy/cryptoKeys/secrets";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cipher_key_is_created_private_and_kept() {
    let mut s = TestServer::start();
    assert_eq!(s.client().health().await.unwrap().cipher, "local");
    let key = s.data_dir().join("cipher.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&key).unwrap();
    s.restart();
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key survives a restart"
    );
    assert_eq!(s.client().health().await.unwrap().cipher, "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kms_cipher_round_trips_through_kms_at_start() {
    let fake = FakeKms::start("test-token").await;
    fake.add_key(KEY);
    let url = fake.url().to_owned();
    let s = tokio::task::spawn_blocking(move || {
        TestServer::start_with(
            &["--cipher", "kms"],
            &[
                ("RUNVOY_GCP_SECRETS_KMS_KEY", KEY),
                ("RUNVOY_GCP_KMS_ENDPOINT", &url),
                ("RUNVOY_GCP_KMS_ACCESS_TOKEN", "test-token"),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(s.client().health().await.unwrap().cipher, "gcp-kms");
    assert_eq!(fake.calls(), (1, 1), "one encrypt and one decrypt at start");
    assert!(
        !s.data_dir().join("cipher.key").exists(),
        "no local key with KMS"
    );
}

/// Runs `runvoyd serve` expecting it to refuse; returns its stderr.
async fn refused(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut c = Command::new(bin("runvoyd"));
    c.args(["serve", "--listen", "127.0.0.1:0", "--no-client-config"])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RUNVOY_CIPHER")
        .env_remove("RUNVOY_GCP_SECRETS_KMS_KEY")
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(!o.status.success(), "runvoyd started: {o:?}");
    assert!(!dir.join("server.json").exists());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runvoyd_refuses_to_start_without_a_working_cipher() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeKms::start("test-token").await;
    fake.add_key(KEY);
    let kms = |key: &'static str, url: &str| -> Vec<(&'static str, String)> {
        vec![
            ("RUNVOY_GCP_SECRETS_KMS_KEY", key.to_owned()),
            ("RUNVOY_GCP_KMS_ENDPOINT", url.to_owned()),
            ("RUNVOY_GCP_KMS_ACCESS_TOKEN", "test-token".to_owned()),
        ]
    };
    let run = |dir: &str, envs: Vec<(&'static str, String)>| {
        let d = tmp.path().join(dir);
        async move {
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            refused(&d, &["--cipher", "kms"], &envs).await
        }
    };

    let err = run("nokey", vec![]).await;
    assert!(
        err.contains("needs the Cloud KMS key in RUNVOY_GCP_SECRETS_KMS_KEY"),
        "{err}"
    );

    let err = run("badname", kms("projects/p/keyRings/r", fake.url())).await;
    assert!(err.contains("is not a Cloud KMS key name"), "{err}");

    fake.set_state(KEY, KeyState::Denied);
    let err = run("denied", kms(KEY, fake.url())).await;
    assert!(
        err.contains("start-up encrypt/decrypt round trip")
            && err.contains(KEY)
            && err.contains("PERMISSION_DENIED"),
        "{err}"
    );
    fake.set_state(KEY, KeyState::Disabled);
    let err = run("disabled", kms(KEY, fake.url())).await;
    assert!(
        err.contains(KEY) && err.contains("FAILED_PRECONDITION"),
        "{err}"
    );
    let err = run(
        "missing",
        kms(
            "projects/p/locations/global/keyRings/runvoy/cryptoKeys/none",
            fake.url(),
        ),
    )
    .await;
    assert!(
        err.contains("cryptoKeys/none") && err.contains("does not exist"),
        "{err}"
    );

    // A local key file others can read.
    let dir = tmp.path().join("exposed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("cipher.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(
        dir.join("cipher.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = refused(&dir, &[], &[]).await;
    assert!(err.contains("chmod 600"), "{err}");
}
