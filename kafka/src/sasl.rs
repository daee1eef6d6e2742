//! SASL authentication of a connection: `PLAIN` (RFC 4616) and `SCRAM-SHA-256` /
//! `SCRAM-SHA-512` (RFC 5802, RFC 7677), carried by Kafka's SaslHandshake and
//! SaslAuthenticate requests. The SCRAM exchange checks the server's signature, so a
//! broker that does not know the password cannot pass for one that does.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rivven_engine::secret::SecretString;
use rivven_engine::{Error, Result};
use sha2::{Digest, Sha256, Sha512};

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// User name and password in the clear (use with TLS).
    Plain,
    /// Salted challenge-response with SHA-256.
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// The mechanism `name` names (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`; any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }

    /// The name Kafka knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: SecretString,
}

/// One SASL conversation, driven by the connection: `first` is the client's first
/// message, then each server message is answered by `next` until it returns `None`.
pub(crate) enum Conversation {
    Plain,
    Scram(Scram),
}

impl Conversation {
    /// Start a conversation for `creds`; its first message.
    pub(crate) fn start(creds: &Credentials) -> Result<(Self, Vec<u8>)> {
        match creds.mechanism {
            Mechanism::Plain => {
                let mut m = Vec::new();
                m.push(0);
                m.extend_from_slice(creds.username.as_bytes());
                m.push(0);
                m.extend_from_slice(creds.password.expose().as_bytes());
                Ok((Conversation::Plain, m))
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let (s, first) = Scram::start(creds)?;
                Ok((Conversation::Scram(s), first))
            }
        }
    }

    /// The answer to the server's `msg`, or `None` when the conversation is over (the
    /// server's last message checked).
    pub(crate) fn next(&mut self, msg: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Conversation::Plain => Ok(None),
            Conversation::Scram(s) => s.next(msg),
        }
    }
}

enum Step {
    /// Client-first sent; waiting for server-first.
    First,
    /// Client-final sent; waiting for server-final, whose signature must be this.
    Final(Vec<u8>),
    Done,
}

/// The client side of a SCRAM exchange.
pub(crate) struct Scram {
    sha512: bool,
    password: SecretString,
    nonce: String,
    first_bare: String,
    step: Step,
}

fn fail(msg: impl std::fmt::Display) -> Error {
    Error::connect(format!("kafka: SASL SCRAM: {msg}")).retryable(false)
}

impl Scram {
    fn start(creds: &Credentials) -> Result<(Self, Vec<u8>)> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| fail(format!("no random nonce: {e}")))?;
        let nonce = B64.encode(raw);
        // RFC 5802 5.1: `=` and `,` in the name are escaped.
        let user = creds.username.replace('=', "=3D").replace(',', "=2C");
        let first_bare = format!("n={user},r={nonce}");
        let first = format!("n,,{first_bare}").into_bytes();
        Ok((
            Scram {
                sha512: creds.mechanism == Mechanism::ScramSha512,
                password: creds.password.clone(),
                nonce,
                first_bare,
                step: Step::First,
            },
            first,
        ))
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length: these calls cannot fail.
        if self.sha512 {
            let mut m =
                <Hmac<Sha512> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            m.update(data);
            m.finalize().into_bytes().to_vec()
        } else {
            let mut m =
                <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }

    fn hash(&self, data: &[u8]) -> Vec<u8> {
        if self.sha512 {
            Sha512::digest(data).to_vec()
        } else {
            Sha256::digest(data).to_vec()
        }
    }

    /// PBKDF2 with this exchange's HMAC (RFC 5802's `Hi`).
    fn salted(&self, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut block = salt.to_vec();
        block.extend_from_slice(&1u32.to_be_bytes());
        let pw = self.password.expose().as_bytes();
        let mut u = self.hmac(pw, &block);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(pw, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }

    fn next(&mut self, msg: &[u8]) -> Result<Option<Vec<u8>>> {
        let text =
            std::str::from_utf8(msg).map_err(|_| fail("the server's message is not UTF-8"))?;
        let attr = |k: char| -> Option<&str> {
            text.split(',')
                .find_map(|p| p.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        };
        if let Some(e) = attr('e') {
            return Err(fail(format!("the server refused: {e}")));
        }
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::First => {
                let nonce = attr('r').ok_or_else(|| fail("no nonce from the server"))?;
                if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
                    return Err(fail("the server's nonce does not extend ours"));
                }
                let salt = attr('s')
                    .and_then(|s| B64.decode(s).ok())
                    .ok_or_else(|| fail("no salt from the server"))?;
                let iterations: u32 = attr('i')
                    .and_then(|i| i.parse().ok())
                    .filter(|i| *i >= 1)
                    .ok_or_else(|| fail("no iteration count from the server"))?;
                let salted = self.salted(&salt, iterations);
                let client_key = self.hmac(&salted, b"Client Key");
                let stored_key = self.hash(&client_key);
                let without_proof = format!("c=biws,r={nonce}");
                let auth = format!("{},{text},{without_proof}", self.first_bare);
                let signature = self.hmac(&stored_key, auth.as_bytes());
                let proof: Vec<u8> = client_key
                    .iter()
                    .zip(&signature)
                    .map(|(a, b)| a ^ b)
                    .collect();
                let server_key = self.hmac(&salted, b"Server Key");
                self.step = Step::Final(self.hmac(&server_key, auth.as_bytes()));
                Ok(Some(
                    format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
                ))
            }
            Step::Final(expected) => {
                let got = attr('v')
                    .and_then(|v| B64.decode(v).ok())
                    .ok_or_else(|| fail("no server signature"))?;
                if got != expected {
                    return Err(fail(
                        "the server's signature is wrong: it does not know the password",
                    ));
                }
                Ok(None)
            }
            Step::Done => Err(fail("a message after the end of the exchange")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, with its client nonce.
    #[test]
    fn scram_sha256_matches_rfc_7677() {
        let mut s = Scram {
            sha512: false,
            password: SecretString::new("pencil"),
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            step: Step::First,
        };
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = s.next(server_first).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(s
            .next(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        let creds = Credentials {
            mechanism: Mechanism::ScramSha512,
            username: "u,=x".into(),
            password: SecretString::new("p"),
        };
        let (mut c, first) = Conversation::start(&creds).unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("n,,n=u=2C=3Dx,r="), "{first}");
        let nonce = first.rsplit("r=").next().unwrap().to_string();
        let server_first = format!("r={nonce}srv,s=c2FsdA==,i=2");
        assert!(c.next(server_first.as_bytes()).unwrap().is_some());
        let err = c.next(b"v=AAAA").unwrap_err().to_string();
        assert!(err.contains("does not know the password"), "{err}");
    }
}
