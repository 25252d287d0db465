//! An in-process fake of Cloud KMS's `cryptoKeys.encrypt` and `cryptoKeys.decrypt` REST methods
//! (feature `fake`), following the v1 reference: base64 bytes, the CRC32C fields checked as
//! KMS checks them and the `verified*` flags set accordingly, Google's error bodies, the 64 KiB
//! limits. It "encrypts" with AES-256-GCM under a random key of its own per CryptoKey, so
//! ciphertext from another key, another fake or altered in any byte fails to decrypt as it
//! would on KMS.
//!
//! Error wording follows what KMS is known to say where that is known; the exact messages for
//! checksum and decryption failures are not documented and are this fake's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::wire::{
    self, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, ErrorBody, ErrorStatus,
};

/// Largest plaintext and additional authenticated data of a SOFTWARE key.
const MAX_BYTES: usize = 64 * 1024;

/// What a CryptoKey lets a caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Encrypts and decrypts.
    Enabled,
    /// Its primary version is disabled: 400 FAILED_PRECONDITION.
    Disabled,
    /// The caller lacks `useToEncrypt`/`useToDecrypt`: 403 PERMISSION_DENIED.
    Denied,
}

struct FakeKey {
    secret: [u8; 32],
    state: KeyState,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, FakeKey>,
    token: String,
    encrypts: u64,
    decrypts: u64,
}

/// A running fake KMS on a loopback port; stops when dropped.
pub struct FakeKms {
    url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKms {
    /// Starts on 127.0.0.1, port 0, accepting only `Authorization: Bearer {token}`.
    pub async fn start(token: &str) -> FakeKms {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/v1/{*call}", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake KMS");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKms { url, inner, task }
    }

    /// Base URL (`http://127.0.0.1:PORT`), to use as the KMS endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates an enabled CryptoKey `name` with a fresh key of its own.
    pub fn add_key(&self, name: &str) {
        let mut secret = [0u8; 32];
        runvoy_cipher::random_bytes(&mut secret).expect("random");
        self.inner.lock().unwrap().keys.insert(
            name.to_owned(),
            FakeKey {
                secret,
                state: KeyState::Enabled,
            },
        );
    }

    /// Changes what a key lets callers do.
    pub fn set_state(&self, name: &str, state: KeyState) {
        if let Some(k) = self.inner.lock().unwrap().keys.get_mut(name) {
            k.state = state;
        }
    }

    /// Calls of encrypt and decrypt answered so far (any outcome).
    pub fn calls(&self) -> (u64, u64) {
        let i = self.inner.lock().unwrap();
        (i.encrypts, i.decrypts)
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorStatus {
            code: status.as_u16(),
            message,
            status: code.to_owned(),
            details: vec![],
        },
    };
    (status, axum::Json(body)).into_response()
}

fn invalid(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// Decodes a bytes field, checking its optional CRC32C as KMS does; the error is the message
/// of a 400 INVALID_ARGUMENT.
fn field(
    name: &str,
    crc_name: &str,
    b64: &str,
    crc: Option<u64>,
) -> Result<(Vec<u8>, bool), String> {
    let data = wire::unb64(b64).map_err(|_| {
        format!("Invalid value at '{name}' (TYPE_BYTES), Base64 decoding failed for {b64:?}")
    })?;
    if data.len() > MAX_BYTES {
        return Err(format!(
            "The {name} is too large: {} bytes, at most {MAX_BYTES}.",
            data.len()
        ));
    }
    match crc {
        None => Ok((data, false)),
        Some(c) if c > u32::MAX as u64 => Err(format!(
            "{crc_name} must be a non-negative integer no larger than 2^32-1."
        )),
        Some(c) if c != wire::crc32c(&data) as u64 => Err(format!(
            "The checksum in field {crc_name} did not match the data in field {name}."
        )),
        Some(_) => Ok((data, true)),
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some((name, method)) = call.rsplit_once(':') else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no method in {call:?}"),
        );
    };
    let is_encrypt = match method {
        "encrypt" => true,
        "decrypt" => false,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("unknown method {method:?}"),
            );
        }
    };
    let (secret, state) = {
        let mut i = inner.lock().unwrap();
        if is_encrypt {
            i.encrypts += 1;
        } else {
            i.decrypts += 1;
        }
        let expected = format!("Bearer {}", i.token);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential."
                    .into(),
            );
        }
        // encrypt takes a CryptoKey or one of its versions; decrypt only a CryptoKey.
        let key_name = match name.split_once("/cryptoKeyVersions/") {
            Some((key, "1")) if is_encrypt => key,
            Some(_) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("{name} not found."),
                );
            }
            None => name,
        };
        match i.keys.get(key_name) {
            Some(k) => (k.secret, k.state),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("{key_name} not found."),
                );
            }
        }
    };
    let key_name = name
        .split_once("/cryptoKeyVersions/")
        .map_or(name, |(k, _)| k);
    match state {
        KeyState::Enabled => {}
        KeyState::Denied => {
            let perm = if is_encrypt {
                "useToEncrypt"
            } else {
                "useToDecrypt"
            };
            return error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                format!(
                    "Permission 'cloudkms.cryptoKeyVersions.{perm}' denied on resource \
                     '{key_name}' (or it may not exist)."
                ),
            );
        }
        KeyState::Disabled => {
            return error(
                StatusCode::BAD_REQUEST,
                "FAILED_PRECONDITION",
                format!(
                    "{key_name}/cryptoKeyVersions/1 is not enabled, current state is: DISABLED."
                ),
            );
        }
    }
    let cipher = Aes256Gcm::new_from_slice(&secret).expect("32-byte key");
    if is_encrypt {
        let req: EncryptRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return invalid(format!("Invalid JSON payload received. {e}")),
        };
        let (plaintext, verified_pt) = match field(
            "plaintext",
            "plaintext_crc32c",
            &req.plaintext,
            req.plaintext_crc32c,
        ) {
            Ok(v) => v,
            Err(m) => return invalid(m),
        };
        let (aad, verified_aad) = match field(
            "additional_authenticated_data",
            "additional_authenticated_data_crc32c",
            &req.additional_authenticated_data,
            req.additional_authenticated_data_crc32c,
        ) {
            Ok(v) => v,
            Err(m) => return invalid(m),
        };
        // The version number first, as KMS ciphertext names its version, then nonce ‖ sealed.
        let mut nonce = [0u8; 12];
        runvoy_cipher::random_bytes(&mut nonce).expect("random");
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("encrypt");
        let mut ciphertext = 1u32.to_be_bytes().to_vec();
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend(sealed);
        axum::Json(EncryptResponse {
            name: format!("{key_name}/cryptoKeyVersions/1"),
            ciphertext_crc32c: Some(wire::crc32c(&ciphertext) as u64),
            ciphertext: wire::b64(&ciphertext),
            verified_plaintext_crc32c: verified_pt,
            verified_additional_authenticated_data_crc32c: verified_aad,
            protection_level: "SOFTWARE".into(),
        })
        .into_response()
    } else {
        let req: DecryptRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return invalid(format!("Invalid JSON payload received. {e}")),
        };
        let (ciphertext, _) = match field(
            "ciphertext",
            "ciphertext_crc32c",
            &req.ciphertext,
            req.ciphertext_crc32c,
        ) {
            Ok(v) => v,
            Err(m) => return invalid(m),
        };
        let (aad, _) = match field(
            "additional_authenticated_data",
            "additional_authenticated_data_crc32c",
            &req.additional_authenticated_data,
            req.additional_authenticated_data_crc32c,
        ) {
            Ok(v) => v,
            Err(m) => return invalid(m),
        };
        let failed = || {
            invalid("Decryption failed: verify that 'name' refers to the correct CryptoKey.".into())
        };
        if ciphertext.len() < 4 + 12 || ciphertext[..4] != 1u32.to_be_bytes() {
            return failed();
        }
        let (nonce, sealed) = ciphertext[4..].split_at(12);
        let Ok(plaintext) = cipher.decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        ) else {
            return failed();
        };
        axum::Json(DecryptResponse {
            plaintext_crc32c: Some(wire::crc32c(&plaintext) as u64),
            plaintext: wire::b64(&plaintext),
            used_primary: true,
            protection_level: "SOFTWARE".into(),
        })
        .into_response()
    }
}
