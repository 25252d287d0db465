//! `serve`'s secrets cipher: which key-encryption key seals stored secrets, proven by one
//! encrypt-and-decrypt round trip before runvoyd starts serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use runvoy_cipher::{EnvelopeCipher, LocalKek};
use runvoy_cipher_kms::{GoogleAdc, KmsConfig, KmsKek, KmsKeyName, StaticToken, TokenProvider};
use runvoy_domain::ports::Cipher;

/// What guards the data keys of stored secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CipherKind {
    /// A 0600 key file, `cipher.key`, in the data dir (created on first start).
    Local,
    /// A Cloud KMS key (`RUNVOY_GCP_SECRETS_KMS_KEY`).
    Kms,
}

/// The cipher flags of `runvoyd serve`.
#[derive(Debug, Args)]
pub struct CipherArgs {
    /// What protects stored secrets: `local` (a key file in the data dir) or `kms` (a Cloud KMS
    /// key, through Application Default Credentials). Default: the backend's (`local`: local,
    /// `gcp`: kms).
    #[arg(long = "cipher", env = "RUNVOY_CIPHER", value_enum)]
    kind: Option<CipherKind>,
    /// The Cloud KMS key of `--cipher kms`:
    /// projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY.
    #[arg(long, env = "RUNVOY_GCP_SECRETS_KMS_KEY")]
    gcp_secrets_kms_key: Option<String>,
    /// Base URL of the Cloud KMS API (default https://cloudkms.googleapis.com).
    #[arg(long, env = "RUNVOY_GCP_KMS_ENDPOINT")]
    gcp_kms_endpoint: Option<String>,
    /// Test only, with --gcp-kms-endpoint: a fixed access token instead of Application Default
    /// Credentials.
    #[arg(long, env = "RUNVOY_GCP_KMS_ACCESS_TOKEN", hide = true)]
    gcp_kms_access_token: Option<String>,
}

impl CipherArgs {
    /// Fills the kind when unset from the backend preset.
    pub fn apply_backend(&mut self, gcp: bool) {
        self.kind.get_or_insert(if gcp {
            CipherKind::Kms
        } else {
            CipherKind::Local
        });
    }
}

/// The longest the start-up round trip may take (KMS retries included).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the cipher and makes one round trip with it; an error says why runvoyd cannot start.
pub async fn start(args: &CipherArgs, data_dir: &Path) -> anyhow::Result<Arc<dyn Cipher>> {
    let cipher: Arc<dyn Cipher> = match args.kind.unwrap_or(CipherKind::Local) {
        CipherKind::Local => {
            if args.gcp_secrets_kms_key.is_some() {
                bail!("RUNVOY_GCP_SECRETS_KMS_KEY is set but --cipher is local; pass --cipher kms");
            }
            let kek = LocalKek::open_or_create(&data_dir.join("cipher.key"))
                .map_err(|e| anyhow::anyhow!("the secrets key cannot be used: {e}"))?;
            Arc::new(EnvelopeCipher::new(kek))
        }
        CipherKind::Kms => {
            let Some(name) = &args.gcp_secrets_kms_key else {
                bail!(
                    "--cipher kms needs the Cloud KMS key in RUNVOY_GCP_SECRETS_KMS_KEY \
                     (projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY)"
                );
            };
            let key = KmsKeyName::parse(name)?;
            let tokens: Arc<dyn TokenProvider> =
                match (&args.gcp_kms_access_token, &args.gcp_kms_endpoint) {
                    (Some(t), Some(_)) => Arc::new(StaticToken(t.clone())),
                    (Some(_), None) => bail!(
                        "RUNVOY_GCP_KMS_ACCESS_TOKEN is for tests against RUNVOY_GCP_KMS_ENDPOINT \
                         only; Cloud KMS itself is reached with Application Default Credentials"
                    ),
                    (None, _) => Arc::new(GoogleAdc::new()?),
                };
            let mut config = KmsConfig::new(key, tokens);
            if let Some(e) = &args.gcp_kms_endpoint {
                config.endpoint = e.clone();
            }
            Arc::new(EnvelopeCipher::new(KmsKek::new(config)?))
        }
    };
    let probe = tokio::time::timeout(PROBE_TIMEOUT, runvoy_cipher::probe(cipher.as_ref())).await;
    let why = match probe {
        Ok(Ok(())) => {
            tracing::info!(cipher = cipher.kind(), "secrets cipher ready");
            return Ok(cipher);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
    };
    bail!(
        "the secrets cipher ({}) failed its start-up encrypt/decrypt round trip: {why}",
        cipher.kind()
    )
}
