//! Field-level encryption: `encrypt_field` and `decrypt_field` (and the
//! `cdc_features.encryption` shorthand, which is `encrypt_field`).
//!
//! ```yaml
//! - type: encrypt_field
//!   config:
//!     fields: [ssn, credit_card]
//!     algorithm: aes-256-gcm          # or chacha20-poly1305
//!     keys:                           # every key that may have written data; 32 bytes each,
//!       - { id: k2, env: PII_KEY_V2 } # as 64 hex digits or base64, from an env var or a file
//!       - { id: k1, file: /run/secrets/pii-k1 }
//!     active_key: k2                  # encrypts new data (default: the first key)
//! ```
//!
//! Each non-null value's text form is sealed with a fresh random 96-bit nonce, the field
//! name as associated data (a value cannot be moved to another field), and written as text:
//! `rivven:enc:1:<algorithm>:<key id>:<base64(nonce | ciphertext | tag)>`. The field's Arrow
//! metadata `rivven.encrypted.type` keeps the original type. `decrypt_field` (same `keys`)
//! reads the key id from each value, so data written before a key rotation still decrypts,
//! and casts back to the original type. Key bytes never appear in errors or logs.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use base64::Engine as _;
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

use super::envelope::images_schema;
use crate::field_list::{non_empty, require_fields, Names};
use crate::image::{image_schema, map_images};
use crate::op::Spec;
use crate::op::{Ctx, Op};
use rivven_engine::Result;

/// Field metadata key holding an encrypted field's original Arrow type.
pub const META_ENCRYPTED_TYPE: &str = "rivven.encrypted.type";
const PREFIX: &str = "rivven:enc:1:";

/// Cipher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Algorithm {
    /// AES-256 in GCM mode.
    #[default]
    #[serde(rename = "aes-256-gcm", alias = "aes256gcm", alias = "AES-256-GCM")]
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    #[serde(rename = "chacha20-poly1305", alias = "chacha20poly1305")]
    ChaCha20Poly1305,
}

impl Algorithm {
    fn tag(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes256gcm",
            Algorithm::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }
    fn from_tag(t: &str) -> Option<Self> {
        match t {
            "aes256gcm" => Some(Algorithm::Aes256Gcm),
            "chacha20poly1305" => Some(Algorithm::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// Where one key comes from.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// Key id written with each value (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// Environment variable holding the key.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the key.
    #[serde(default)]
    pub file: Option<std::path::PathBuf>,
}

/// Keys shared by `encrypt_field` and `decrypt_field`.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Every key that may have encrypted data.
    pub keys: Vec<KeySource>,
    /// The key that encrypts new data (default: the first).
    pub active_key: Option<String>,
}

/// 32 key bytes, never printed.
#[derive(Clone)]
struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

fn decode_key(text: &str) -> std::result::Result<Key, String> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| "bad hex".to_owned()))
            .collect::<std::result::Result<Vec<u8>, String>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|_| "not 64 hex digits or base64".to_owned())?
    };
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes; a key is 32 bytes", bytes.len()))?;
    Ok(Key(arr))
}

impl Validate for KeyConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.keys.is_empty() {
            errs.push(FieldError::new("keys", "list at least one key"));
        }
        for (i, k) in self.keys.iter().enumerate() {
            if k.id.is_empty()
                || !k
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errs.push(FieldError::new(
                    format!("keys[{i}].id"),
                    "use letters, digits, `-`, `_`, `.`",
                ));
            }
            if k.env.is_some() == k.file.is_some() {
                errs.push(FieldError::new(
                    format!("keys[{i}]"),
                    "give exactly one of `env` and `file`",
                ));
            }
        }
        if let Some(a) = &self.active_key {
            if !self.keys.iter().any(|k| &k.id == a) {
                errs.push(FieldError::new(
                    "active_key",
                    format!("no key with id `{a}` in `keys`"),
                ));
            }
        }
        errs
    }
}

impl KeyConfig {
    /// Load every key; errors name the key id and source, never the material.
    fn load(&self) -> std::result::Result<(HashMap<String, Key>, String), FieldError> {
        let mut out = HashMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let text = match (&k.env, &k.file) {
                (Some(var), _) => std::env::var(var).map_err(|_| {
                    FieldError::new(
                        &at,
                        format!("key `{}`: environment variable `{var}` is not set", k.id),
                    )
                })?,
                (_, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                    FieldError::new(&at, format!("key `{}`: read {}: {e}", k.id, path.display()))
                })?,
                _ => return Err(FieldError::new(&at, "give `env` or `file`")),
            };
            let key = decode_key(&text)
                .map_err(|e| FieldError::new(&at, format!("key `{}`: {e}", k.id)))?;
            out.insert(k.id.clone(), key);
        }
        let active = self
            .active_key
            .clone()
            .or_else(|| self.keys.first().map(|k| k.id.clone()))
            .unwrap_or_default();
        Ok((out, active))
    }
}

fn seal(
    alg: Algorithm,
    key: &Key,
    nonce: &[u8; 12],
    aad: &[u8],
    msg: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let payload = Payload { msg, aad };
    match alg {
        Algorithm::Aes256Gcm => {
            aes_gcm::Aes256Gcm::new((&key.0).into()).encrypt(nonce.into(), payload)
        }
        Algorithm::ChaCha20Poly1305 => {
            chacha20poly1305::ChaCha20Poly1305::new((&key.0).into()).encrypt(nonce.into(), payload)
        }
    }
    .map_err(|_| "encryption failed".to_owned())
}

fn open(
    alg: Algorithm,
    key: &Key,
    nonce: &[u8],
    aad: &[u8],
    msg: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let payload = Payload { msg, aad };
    let nonce: &[u8; 12] = nonce.try_into().map_err(|_| "bad nonce".to_owned())?;
    match alg {
        Algorithm::Aes256Gcm => {
            aes_gcm::Aes256Gcm::new((&key.0).into()).decrypt(nonce.into(), payload)
        }
        Algorithm::ChaCha20Poly1305 => {
            chacha20poly1305::ChaCha20Poly1305::new((&key.0).into()).decrypt(nonce.into(), payload)
        }
    }
    .map_err(|_| "authentication failed (wrong key, or the value was altered or moved)".to_owned())
}

/// `encrypt_field`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptField {
    /// Fields to encrypt.
    pub fields: Names,
    /// Cipher for new data.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Every key that may have encrypted data.
    pub keys: Vec<KeySource>,
    /// The key that encrypts new data (default: the first).
    #[serde(default)]
    pub active_key: Option<String>,
}

impl EncryptField {
    fn key_config(&self) -> KeyConfig {
        KeyConfig {
            keys: self.keys.clone(),
            active_key: self.active_key.clone(),
        }
    }
}

impl Validate for EncryptField {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = self.key_config().validate();
        errs.extend(non_empty("fields", &self.fields));
        errs
    }
}

impl Spec for EncryptField {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let row = image_schema(input);
        require_fields("fields", &self.fields, &row)?;
        let (keys, active) = self.key_config().load()?;
        let key = keys
            .get(&active)
            .cloned()
            .ok_or_else(|| FieldError::new("active_key", format!("no key `{active}`")))?;
        let mut fields: Vec<FieldRef> = row.fields().iter().cloned().collect();
        let mut targets = Vec::new();
        for (i, f) in fields.iter_mut().enumerate() {
            if self.fields.iter().any(|n| n == f.name()) {
                if f.metadata().contains_key(META_ENCRYPTED_TYPE) {
                    return Err(FieldError::new(
                        "fields",
                        format!("`{}` is already encrypted", f.name()),
                    ));
                }
                let mut meta = f.metadata().clone();
                meta.insert(META_ENCRYPTED_TYPE.into(), f.data_type().to_string());
                *f = Arc::new(Field::new(f.name(), DataType::Utf8, true).with_metadata(meta));
                targets.push(i);
            }
        }
        let image_out = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Arc::new(EncryptOp {
            output: images_schema(input, &image_out),
            image_out,
            targets,
            alg: self.algorithm,
            key_id: active,
            key,
        }))
    }
}

struct EncryptOp {
    output: SchemaRef,
    image_out: SchemaRef,
    targets: Vec<usize>,
    alg: Algorithm,
    key_id: String,
    key: Key,
}

impl EncryptOp {
    fn encrypt(&self, name: &str, col: &ArrayRef) -> Result<ArrayRef> {
        let text = cast(col, &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| rivven_engine::Error::internal("text cast"))?;
        let head = format!("{PREFIX}{}:{}:", self.alg.tag(), self.key_id);
        let mut b = StringBuilder::with_capacity(text.len(), text.len() * (head.len() + 64));
        let b64 = base64::engine::general_purpose::STANDARD;
        for v in text.iter() {
            match v {
                None => b.append_null(),
                Some(v) => {
                    let nonce: [u8; 12] = rand_nonce()?;
                    let sealed = seal(self.alg, &self.key, &nonce, name.as_bytes(), v.as_bytes())
                        .map_err(rivven_engine::Error::data)?;
                    let mut blob = Vec::with_capacity(12 + sealed.len());
                    blob.extend_from_slice(&nonce);
                    blob.extend_from_slice(&sealed);
                    b.append_value(format!("{head}{}", b64.encode(blob)));
                }
            }
        }
        Ok(Arc::new(b.finish()))
    }
}

fn rand_nonce() -> Result<[u8; 12]> {
    let mut n = [0u8; 12];
    getrandom::fill(&mut n)
        .map_err(|e| rivven_engine::Error::internal(format!("random nonce: {e}")))?;
    Ok(n)
}

impl Op for EncryptOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.output
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        map_images(batch, &|img: &RecordBatch| {
            let mut columns = img.columns().to_vec();
            for &i in &self.targets {
                let name = img.schema().field(i).name().clone();
                columns[i] = self.encrypt(&name, &columns[i])?;
            }
            Ok(RecordBatch::try_new(self.image_out.clone(), columns)?)
        })
    }
}

/// `decrypt_field`: the inverse of `encrypt_field`, with the same `keys`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptField {
    /// Fields to decrypt.
    pub fields: Names,
    /// Every key id that may appear in the data.
    pub keys: Vec<KeySource>,
    /// Accepted for symmetry with `encrypt_field`; decryption uses the id in each value.
    #[serde(default)]
    pub active_key: Option<String>,
}

impl DecryptField {
    fn key_config(&self) -> KeyConfig {
        KeyConfig {
            keys: self.keys.clone(),
            active_key: self.active_key.clone(),
        }
    }
}

impl Validate for DecryptField {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = self.key_config().validate();
        errs.extend(non_empty("fields", &self.fields));
        errs
    }
}

impl Spec for DecryptField {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let row = image_schema(input);
        require_fields("fields", &self.fields, &row)?;
        let (keys, _) = self.key_config().load()?;
        let mut fields: Vec<FieldRef> = row.fields().iter().cloned().collect();
        let mut targets = Vec::new();
        for (i, f) in fields.iter_mut().enumerate() {
            if !self.fields.iter().any(|n| n == f.name()) {
                continue;
            }
            let mut meta = f.metadata().clone();
            let ty = match meta.remove(META_ENCRYPTED_TYPE) {
                Some(t) => t.parse::<DataType>().map_err(|e| {
                    FieldError::new(
                        "fields",
                        format!("`{}`: unreadable original type `{t}`: {e}", f.name()),
                    )
                })?,
                None => DataType::Utf8,
            };
            *f = Arc::new(Field::new(f.name(), ty.clone(), true).with_metadata(meta));
            targets.push((i, ty));
        }
        let image_out = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Arc::new(DecryptOp {
            output: images_schema(input, &image_out),
            image_out,
            targets,
            keys,
        }))
    }
}

struct DecryptOp {
    output: SchemaRef,
    image_out: SchemaRef,
    targets: Vec<(usize, DataType)>,
    keys: HashMap<String, Key>,
}

impl DecryptOp {
    fn decrypt_one(&self, name: &str, v: &str) -> std::result::Result<String, String> {
        let rest = v
            .strip_prefix(PREFIX)
            .ok_or_else(|| "not a rivven-encrypted value".to_owned())?;
        let mut parts = rest.splitn(3, ':');
        let (alg, id, blob) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let alg = Algorithm::from_tag(alg).ok_or_else(|| format!("unknown algorithm `{alg}`"))?;
        let key = self
            .keys
            .get(id)
            .ok_or_else(|| format!("written with key `{id}`, which is not in `keys`"))?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| "corrupt ciphertext (base64)".to_owned())?;
        if blob.len() < 12 + 16 {
            return Err("corrupt ciphertext (too short)".into());
        }
        let plain = open(alg, key, &blob[..12], name.as_bytes(), &blob[12..])?;
        String::from_utf8(plain).map_err(|_| "plaintext is not UTF-8".into())
    }
}

impl Op for DecryptOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.output
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        map_images(batch, &|img: &RecordBatch| {
            let mut columns = img.columns().to_vec();
            for (i, ty) in &self.targets {
                let name = img.schema().field(*i).name().clone();
                let text = cast(&columns[*i], &DataType::Utf8)?;
                let text = text
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| rivven_engine::Error::internal("text cast"))?;
                let mut b = StringBuilder::with_capacity(text.len(), text.value_data().len());
                for (row, v) in text.iter().enumerate() {
                    match v {
                        None => b.append_null(),
                        Some(v) => b.append_value(self.decrypt_one(&name, v).map_err(|e| {
                            rivven_engine::Error::data(format!("decrypt `{name}` (row {row}): {e}"))
                        })?),
                    }
                }
                let plain: ArrayRef = Arc::new(b.finish());
                columns[*i] = cast(&plain, ty)?;
            }
            Ok(RecordBatch::try_new(self.image_out.clone(), columns)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::decode_key;

    #[test]
    fn keys_decode_from_hex_and_base64_and_never_print() {
        let hex = "00".repeat(32);
        assert!(decode_key(&hex).is_ok());
        assert!(decode_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert!(decode_key("abcd").unwrap_err().contains("bytes") || decode_key("abcd").is_err());
        let k = decode_key(&"ab".repeat(32)).unwrap();
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }
}
