//! Cloud KMS REST bodies (`google.cloud.kms.v1` service.proto, proto3 JSON mapping): bytes are
//! base64 strings, the `Int64Value` CRC32C fields decimal strings, and fields at their default
//! value may be absent from an answer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// CRC32C (Castagnoli) of `data`, as KMS computes it.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Base64 as proto3 JSON writes bytes.
pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes proto3 JSON bytes (standard alphabet; the URL-safe one is accepted too, as
/// Google's parsers do).
pub fn unb64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(s).or_else(|e| {
        base64::engine::general_purpose::URL_SAFE
            .decode(s)
            .map_err(|_| e)
    })
}

/// `EncryptRequest` (the `name` is in the URL).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptRequest {
    /// Base64 of the data to encrypt.
    #[serde(default)]
    pub plaintext: String,
    /// Base64 of the additional authenticated data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub additional_authenticated_data: String,
    /// CRC32C of the raw plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "int64")]
    pub plaintext_crc32c: Option<u64>,
    /// CRC32C of the raw additional authenticated data.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "int64")]
    pub additional_authenticated_data_crc32c: Option<u64>,
}

/// `EncryptResponse`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    /// The CryptoKeyVersion that encrypted.
    #[serde(default)]
    pub name: String,
    /// Base64 of the ciphertext.
    #[serde(default)]
    pub ciphertext: String,
    /// CRC32C of the raw ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "int64")]
    pub ciphertext_crc32c: Option<u64>,
    /// Whether KMS received and checked `plaintextCrc32c`.
    #[serde(default)]
    pub verified_plaintext_crc32c: bool,
    /// Whether KMS received and checked `additionalAuthenticatedDataCrc32c`.
    #[serde(default)]
    pub verified_additional_authenticated_data_crc32c: bool,
    /// `SOFTWARE`, `HSM`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protection_level: String,
}

/// `DecryptRequest` (the `name` is in the URL).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecryptRequest {
    /// Base64 of the ciphertext `encrypt` returned.
    #[serde(default)]
    pub ciphertext: String,
    /// Base64 of the additional authenticated data given to `encrypt`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub additional_authenticated_data: String,
    /// CRC32C of the raw ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "int64")]
    pub ciphertext_crc32c: Option<u64>,
    /// CRC32C of the raw additional authenticated data.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "int64")]
    pub additional_authenticated_data_crc32c: Option<u64>,
}

/// `DecryptResponse`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptResponse {
    /// Base64 of the plaintext (absent when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plaintext: String,
    /// CRC32C of the raw plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "int64")]
    pub plaintext_crc32c: Option<u64>,
    /// Whether the primary version decrypted.
    #[serde(default)]
    pub used_primary: bool,
    /// `SOFTWARE`, `HSM`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protection_level: String,
}

/// Google's REST error body, `{"error": google.rpc.Status}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The status.
    pub error: ErrorStatus,
}

/// `google.rpc.Status` as REST answers carry it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorStatus {
    /// The HTTP status code.
    #[serde(default)]
    pub code: u16,
    /// What went wrong, for a developer.
    #[serde(default)]
    pub message: String,
    /// The canonical code name (`PERMISSION_DENIED`, `FAILED_PRECONDITION`, …).
    #[serde(default)]
    pub status: String,
    /// Typed details; kept as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
}

/// `google.protobuf.Int64Value` in proto3 JSON: written as a decimal string, read from a string
/// or a number.
mod int64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Str(String),
        Num(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Int64>::deserialize(d)? {
            None => Ok(None),
            Some(Int64::Num(n)) => Ok(Some(n)),
            Some(Int64::Str(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an int64"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn checksums_are_json_strings() {
        let r = EncryptRequest {
            plaintext: b64(b"x"),
            additional_authenticated_data: String::new(),
            plaintext_crc32c: Some(u32::MAX as u64),
            additional_authenticated_data_crc32c: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"plaintext": "eA==", "plaintextCrc32c": "4294967295"})
        );
        let back: EncryptResponse =
            serde_json::from_str(r#"{"ciphertextCrc32c": 12, "name": "n"}"#).unwrap();
        assert_eq!(back.ciphertext_crc32c, Some(12));
        let back: EncryptResponse = serde_json::from_str(r#"{"ciphertextCrc32c": "12"}"#).unwrap();
        assert_eq!(back.ciphertext_crc32c, Some(12));
        assert!(!back.verified_plaintext_crc32c, "absent booleans are false");
        assert!(serde_json::from_str::<EncryptResponse>(r#"{"ciphertextCrc32c": "x"}"#).is_err());
    }
}
