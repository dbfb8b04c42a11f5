//! The farm key: every message between gateways and worker hosts is signed,
//! and a message that is not is dropped and counted, never acted on.
//!
//! NATS permissions say who may publish on a subject; they cannot say that
//! a job really comes from one of *our* gateways, or a result from one of
//! our hosts. So gateways and hosts share a secret (`--farm-key FILE`, the
//! same file everywhere) and each message carries one NATS header,
//! `Tc-Sig: SENDER.SEQ.TIME.MAC`:
//!
//! | part | what |
//! |---|---|
//! | `SENDER` | who sent it: a random id per process, new at every start |
//! | `SEQ` | that sender's message counter (1, 2, 3, …) |
//! | `TIME` | when it was sent, milliseconds since the Unix epoch |
//! | `MAC` | HMAC-SHA256 with the farm key over the subject, the three above, the `Nats-Msg-Id` and the payload; its first 128 bits, base64url |
//!
//! One short header, not four: JetStream scans a message's headers several
//! times as it stores and delivers it, so on short jobs every header byte
//! shows in the farm's throughput (four headers and a hex MAC cost ~8%).
//! Keeping 128 of the MAC's 256 bits is the standard truncation (RFC 4868's
//! HMAC-SHA-256-128): a forger still has to guess 128 bits.
//!
//! The MAC makes a forged or altered message fail; the sender, counter and
//! time make a replayed one detectable: a heartbeat must come with a higher
//! counter than the last one from its sender ([`ReplayGuard`]) and within
//! [`MAX_CLOCK_SKEW`] of now; a job carries its own expiry and a host
//! remembers which stream message each recent job came in ([`JobReplays`]),
//! so the same job published twice is refused while a redelivery of the
//! same message is not. Covering the subject stops a message signed for one
//! subject being replayed on another.
//!
//! Without a key (no `--farm-key`), nothing is signed or checked: the farm
//! works as before, and says loudly at start that anyone who can publish to
//! its NATS can give it work.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "nats")]
use async_nats::HeaderMap;
use ring::hmac;

use crate::error::{Error, Result};

/// The fewest bytes a key file may hold: 256 bits, the HMAC-SHA256 key size.
pub(crate) const MIN_KEY_BYTES: usize = 32;
/// The most: a key file is a secret, not a data file.
const MAX_KEY_BYTES: usize = 4096;
/// How far a message's time may be from the receiver's clock (machines of
/// a farm keep time with NTP; a heartbeat older than this is a replay or a
/// machine whose clock is wrong — either way not trusted).
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Senders a [`ReplayGuard`] remembers; past this, the least recently heard
/// is forgotten (its next message is then judged by its time alone).
const MAX_SENDERS: usize = 4096;

/// The signature header: `SENDER.SEQ.TIME.MAC`.
const SIGNATURE: &str = "Tc-Sig";
/// The bytes of the MAC a message carries (of HMAC-SHA256's 32).
const MAC_BYTES: usize = 16;
const MSG_ID: &str = "Nats-Msg-Id";

/// What a farm without a key says at start (loudly) and in `/readyz`.
pub(crate) const NO_KEY_WARNING: &str = "no --farm-key: messages between gateways and worker hosts are not \
     signed, so anyone who can publish to this NATS server can send jobs, results and heartbeats; give every \
     gateway and host the same --farm-key FILE (docs/SECURITY.md)";

/// The key `--farm-key` names, or none — then the warning is logged.
///
/// # Errors
/// As [`FarmKey::from_file`].
pub(crate) fn load_farm_key(path: Option<&Path>) -> Result<Option<FarmKey>> {
    match path {
        Some(path) => FarmKey::from_file(path).map(Some),
        None => {
            tracing::warn!("{NO_KEY_WARNING}");
            Ok(None)
        }
    }
}

/// The farm's shared secret. `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct FarmKey {
    key: hmac::Key,
}

impl std::fmt::Debug for FarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FarmKey(…)")
    }
}

impl FarmKey {
    /// Reads the key file: at least [`MIN_KEY_BYTES`] bytes once surrounding
    /// whitespace is trimmed (so `head -c 32 /dev/urandom | base64 > farm.key`
    /// works, and so does an editor's final newline).
    ///
    /// # Errors
    /// The file cannot be read, or is too short or too long, named with the flag.
    pub(crate) fn from_file(path: &Path) -> Result<FarmKey> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Config(format!("--farm-key {}: cannot read the key file: {e}", path.display()))
        })?;
        let secret = bytes.trim_ascii();
        if secret.len() < MIN_KEY_BYTES || secret.len() > MAX_KEY_BYTES {
            return Err(Error::Config(format!(
                "--farm-key {}: the key file holds {} bytes; it needs {MIN_KEY_BYTES} to {MAX_KEY_BYTES} \
                 (make a new key with: head -c 32 /dev/urandom | base64 > farm.key, and give that same \
                 file to every gateway and host)",
                path.display(),
                secret.len(),
            )));
        }
        Ok(FarmKey::from_secret(secret))
    }

    /// A key from its secret bytes (tests and [`FarmKey::from_file`]).
    pub(crate) fn from_secret(secret: &[u8]) -> FarmKey {
        FarmKey { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No signature at all: the sender has no farm key (or is not ours).
    Unsigned,
    /// A signature header that is not one of ours.
    BadSignature,
    /// A well-formed signature whose MAC does not match: made with another
    /// key, or the message was altered on the way.
    OtherKey,
    /// Signed, but sent longer ago (or further ahead) than [`MAX_CLOCK_SKEW`].
    Stale,
    /// Signed, but already seen: a replay.
    Replayed,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejection::Unsigned => "not signed: its sender has no --farm-key, or is not part of this farm",
            Rejection::BadSignature => "its signature header is not ThreadCenter's",
            Rejection::OtherKey => {
                "signed, but not with this farm's key (another --farm-key file, or altered on the way)"
            }
            Rejection::Stale => "signed too long ago (a replay, or a clock that is wrong)",
            Rejection::Replayed => "already received once (a replay)",
        })
    }
}

/// Who sent a signed message, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    pub(crate) sender: String,
    pub(crate) seq: u64,
    pub(crate) time_ms: u64,
}

/// Signs what one process sends: its sender id and message counter.
#[derive(Debug)]
pub(crate) struct Signer {
    key: Option<FarmKey>,
    sender: String,
    seq: AtomicU64,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The MAC over a message: its subject, message id, sender, payload (each
/// length-prefixed, so no two different messages give the same input),
/// counter and time. Fed to HMAC part by part: the payload (an image batch
/// can be most of a megabyte) is never copied.
fn mac(
    key: &hmac::Key,
    subject: &str,
    msg_id: &str,
    sender: &str,
    seq: u64,
    time_ms: u64,
    payload: &[u8],
) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    for part in [subject.as_bytes(), msg_id.as_bytes(), sender.as_bytes(), payload] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context.update(&seq.to_be_bytes());
    context.update(&time_ms.to_be_bytes());
    context.sign()
}

/// The MAC as sent: its first [`MAC_BYTES`] bytes, base64url without padding.
fn encode_mac(tag: &hmac::Tag) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..MAC_BYTES])
}

/// The parts of a `Tc-Sig` header, or `None` when it is not one of ours.
fn parse_signature(text: &str) -> Option<(&str, u64, u64, Vec<u8>)> {
    use base64::Engine;
    let mut parts = text.split('.');
    let (sender, seq, time, mac) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || sender.is_empty() {
        return None;
    }
    let mac =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).ok().filter(|m| m.len() == MAC_BYTES)?;
    Some((sender, seq.parse().ok()?, time.parse().ok()?, mac))
}

impl Signer {
    /// A signer for this process (a fresh random sender id), with `key` or
    /// none (then [`Signer::sign`] adds nothing).
    pub(crate) fn new(key: Option<FarmKey>) -> Signer {
        // 122 random bits in 22 characters (base64url of the UUID's bytes).
        let sender = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        };
        Signer { key, sender, seq: AtomicU64::new(0) }
    }

    /// Adds the signature headers for `payload` on `subject` to `headers`
    /// (which may already hold a `Nats-Msg-Id`, then covered too).
    #[cfg(feature = "nats")]
    pub(crate) fn sign(&self, subject: &str, headers: &mut HeaderMap, payload: &[u8]) {
        let Some(key) = &self.key else { return };
        // Relaxed: the counter only needs to be unique per message; order
        // between threads is not what it protects.
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let time_ms = now_ms();
        let msg_id = headers.get(MSG_ID).map(|v| v.as_str().to_string()).unwrap_or_default();
        let tag = mac(&key.key, subject, &msg_id, &self.sender, seq, time_ms, payload);
        let signature = format!("{}.{seq}.{time_ms}.{}", self.sender, encode_mac(&tag));
        headers.insert(SIGNATURE, signature.as_str());
    }
}

/// Checks signatures with the farm key (or accepts everything without one).
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    key: Option<FarmKey>,
}

impl Verifier {
    pub(crate) fn new(key: Option<FarmKey>) -> Verifier {
        Verifier { key }
    }

    /// The sender of a message whose signature is good. Without a key every
    /// message passes (and `Signed` is empty).
    ///
    /// # Errors
    /// [`Rejection::Unsigned`] for a message without a signature,
    /// [`Rejection::BadSignature`] for one whose header is not ours, and
    /// [`Rejection::OtherKey`] for one whose MAC does not match.
    #[cfg(feature = "nats")]
    pub(crate) fn verify(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> std::result::Result<Signed, Rejection> {
        let Some(key) = &self.key else {
            return Ok(Signed { sender: String::new(), seq: 0, time_ms: 0 });
        };
        let signature = headers.and_then(|h| h.get(SIGNATURE)).ok_or(Rejection::Unsigned)?;
        let headers = headers.ok_or(Rejection::Unsigned)?;
        let (sender, seq, time_ms, carried) =
            parse_signature(signature.as_str()).ok_or(Rejection::BadSignature)?;
        let msg_id = headers.get(MSG_ID).map(|v| v.as_str()).unwrap_or_default();
        // Compared in constant time: a timing difference must not tell a
        // forger how many leading bytes of a guessed MAC were right.
        let expected = mac(&key.key, subject, msg_id, sender, seq, time_ms, payload);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected.as_ref()[..MAC_BYTES], carried.as_slice())) {
            return Err(Rejection::OtherKey);
        }
        let sender = sender.to_string();
        Ok(Signed { sender, seq, time_ms })
    }

    /// The signature header a message carries, as sent (`None` without one).
    #[cfg(feature = "nats")]
    pub(crate) fn signature_of(headers: Option<&HeaderMap>) -> Option<&str> {
        headers.and_then(|h| h.get(SIGNATURE)).map(|v| v.as_str())
    }

    /// Whether messages are checked (a farm key is set).
    pub(crate) fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Whether a message is signed though this process has no key: its
    /// sender has one, and will refuse everything this process sends.
    #[cfg(feature = "nats")]
    pub(crate) fn signed_without_key(&self, headers: Option<&HeaderMap>) -> bool {
        self.key.is_none() && headers.is_some_and(|h| h.get(SIGNATURE).is_some())
    }
}

/// A farm key that differs between this process and a sender of its
/// messages: the one misconfiguration that otherwise shows only as jobs
/// that never come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyMismatch {
    /// This process has a key; the sender has none.
    SenderHasNone,
    /// Both have keys, and they differ (or the message was altered).
    OtherKey,
    /// The sender has a key; this process has none.
    OnlySenderHasOne,
}

impl KeyMismatch {
    const ALL: [KeyMismatch; 3] =
        [KeyMismatch::SenderHasNone, KeyMismatch::OtherKey, KeyMismatch::OnlySenderHasOne];

    /// The mismatch a rejection shows, if it is one (replays are not).
    pub(crate) fn of(rejection: &Rejection) -> Option<KeyMismatch> {
        match rejection {
            Rejection::Unsigned => Some(KeyMismatch::SenderHasNone),
            Rejection::OtherKey => Some(KeyMismatch::OtherKey),
            Rejection::BadSignature | Rejection::Stale | Rejection::Replayed => None,
        }
    }

    /// Its name, for the log's rate limit.
    fn kind(self) -> &'static str {
        match self {
            KeyMismatch::SenderHasNone => "a message not signed",
            KeyMismatch::OtherKey => "a message signed with another key",
            KeyMismatch::OnlySenderHasOne => "a message signed though this process has no key",
        }
    }

    /// What is wrong and what to do, about `what` (e.g. "a heartbeat from
    /// host 'h1'").
    fn advice(self, what: &str) -> String {
        match self {
            KeyMismatch::SenderHasNone => format!(
                "{what} was not signed and was dropped: its sender runs without --farm-key (or is not part of \
                 this farm); give every gateway and host the same --farm-key FILE"
            ),
            KeyMismatch::OtherKey => format!(
                "{what} was signed with a different farm key and was dropped: give every gateway and host the \
                 same --farm-key FILE (compare the files with sha256sum)"
            ),
            KeyMismatch::OnlySenderHasOne => format!(
                "{what} was signed with a farm key, but this process has no --farm-key, so its sender refuses \
                 everything this one sends; give this process the same --farm-key FILE"
            ),
        }
    }
}

/// How often one kind of mismatch is logged at most: a wrong key makes
/// every message fail, and one line says it as well as thousands.
const MISMATCH_LOG_EVERY: Duration = Duration::from_secs(30);
/// How long a mismatch is reported in `/readyz` and `BUSY` replies after
/// it was last seen.
pub(crate) const MISMATCH_RECENT: Duration = Duration::from_secs(60);
/// The longest sender name a mismatch report repeats (the name comes from
/// an unverified message).
const MISMATCH_NAME_CHARS: usize = 64;

/// The farm-key mismatches this process has seen lately: logged as a
/// warning (at most once per [`MISMATCH_LOG_EVERY`] per kind, with how many
/// were not logged) and told in `/readyz` and in a gateway's `BUSY` reply.
#[derive(Debug, Default)]
pub(crate) struct KeyTrouble {
    /// By kind: when last seen, and what showed it.
    seen: Mutex<[Option<(std::time::Instant, String)>; 3]>,
    /// Which lines get written (a kind at most every 30 s).
    lines: RefusalLog,
}

impl KeyTrouble {
    /// Notes a mismatch shown by `what`, and logs it unless it was logged
    /// within the last [`MISMATCH_LOG_EVERY`].
    pub(crate) fn noticed(&self, mismatch: KeyMismatch, what: &str) {
        let what: String = what.chars().take(MISMATCH_NAME_CHARS * 2).collect();
        if let Some(unlogged) = self.lines.allow(mismatch.kind()) {
            tracing::warn!(more_since_last_warning = unlogged, "{}", mismatch.advice(&what));
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen[mismatch as usize] = Some((std::time::Instant::now(), what));
    }

    /// The mismatches seen within [`MISMATCH_RECENT`], one sentence each.
    pub(crate) fn recent(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        KeyMismatch::ALL
            .iter()
            .zip(seen.iter())
            .filter_map(|(mismatch, seen)| {
                let (_, what) = seen.as_ref().filter(|(last, _)| last.elapsed() < MISMATCH_RECENT)?;
                Some(format!("in the last minute, {}", mismatch.advice(what)))
            })
            .collect()
    }
}

/// Warnings about messages refused for any other reason (a signature header
/// that is not ours, a replay, a payload that is not a job or results):
/// at most one per kind every [`MISMATCH_LOG_EVERY`], with how many were not
/// logged. Anyone who can publish to the farm's NATS can send thousands of
/// such messages a second; each costs a counter (`messages_rejected`), not
/// a line in the log.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    /// By kind (one per call site, so a handful): when it was last logged,
    /// and how many were refused since without a line.
    kinds: Mutex<HashMap<&'static str, (std::time::Instant, u64)>>,
}

impl RefusalLog {
    /// Logs `kind` (what was dropped) with `why`, unless a message of that
    /// kind was logged within the last [`MISMATCH_LOG_EVERY`].
    pub(crate) fn warn(&self, kind: &'static str, why: &dyn std::fmt::Display) {
        if let Some(unlogged) = self.allow(kind) {
            tracing::warn!(more_since_last_warning = unlogged, %why, "{kind}");
        }
    }

    /// Whether a line about `kind` may be written now: `Some` with how many
    /// went unlogged since the last one, or `None` (counted) within
    /// [`MISMATCH_LOG_EVERY`] of the last.
    fn allow(&self, kind: &'static str) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let unlogged = match kinds.get_mut(kind) {
            Some((logged, unlogged)) if now.duration_since(*logged) < MISMATCH_LOG_EVERY => {
                *unlogged += 1;
                return None;
            }
            Some((_, unlogged)) => *unlogged,
            None => 0,
        };
        kinds.insert(kind, (now, 0));
        Some(unlogged)
    }

    /// How many of `kind` were refused without a line since its last one.
    #[cfg(test)]
    fn unlogged(&self, kind: &'static str) -> Option<u64> {
        self.kinds.lock().unwrap_or_else(PoisonError::into_inner).get(kind).map(|(_, n)| *n)
    }
}

/// A sender's name from an unverified message, short and printable, for a
/// mismatch report.
pub(crate) fn untrusted_name(name: &str) -> String {
    let short: String = name.chars().take(MISMATCH_NAME_CHARS).collect();
    format!("{short:?}")
}

/// Refuses a replayed message that arrives over core NATS (heartbeats):
/// each sender's counter must grow, and its time be within
/// [`MAX_CLOCK_SKEW`]. One sender publishes such messages from one task, in
/// order, and NATS keeps a publisher's order, so a counter that does not
/// grow is a copy.
#[derive(Debug, Default)]
pub(crate) struct ReplayGuard {
    last: Mutex<HashMap<String, (u64, u64)>>,
}

impl ReplayGuard {
    /// Accepts `signed` if it is newer than everything before from its sender.
    ///
    /// # Errors
    /// [`Rejection::Stale`] or [`Rejection::Replayed`].
    pub(crate) fn check(&self, signed: &Signed, now_ms: u64) -> std::result::Result<(), Rejection> {
        if signed.sender.is_empty() {
            return Ok(()); // no farm key: nothing to check against
        }
        let skew = u64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        if signed.time_ms.abs_diff(now_ms) > skew {
            return Err(Rejection::Stale);
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seq, _)) = last.get(&signed.sender) {
            if signed.seq <= *seq {
                return Err(Rejection::Replayed);
            }
        } else if last.len() >= MAX_SENDERS {
            // Forget the sender heard from least recently (a process long gone).
            if let Some(oldest) = last.iter().min_by_key(|(_, (_, heard))| *heard).map(|(s, _)| s.clone()) {
                last.remove(&oldest);
            }
        }
        last.insert(signed.sender.clone(), (signed.seq, now_ms));
        Ok(())
    }
}

/// Which stream message each recent job arrived in, by its signature
/// (sender, counter), so a host refuses the same job published twice while
/// accepting JetStream's redelivery of the same message. Entries leave when
/// their job expires; the table holds at most `capacity` (then the entry
/// whose job expires first goes).
///
/// A second index orders the entries by expiry, so forgetting the expired
/// ones and making room cost O(log n) per job: a host takes thousands of
/// jobs a second and keeps them for minutes, so a scan of the whole table
/// at every job once it is full would cost more than the jobs.
#[derive(Debug)]
pub(crate) struct JobReplays {
    table: Mutex<ReplayTable>,
    capacity: usize,
}

/// Job signature → (stream sequence it came in, its expiry in ms), and the
/// same entries ordered by expiry.
#[derive(Debug, Default)]
struct ReplayTable {
    seen: HashMap<(String, u64), (u64, u64)>,
    by_expiry: std::collections::BTreeSet<(u64, (String, u64))>,
}

impl ReplayTable {
    /// Forgets the entry expiring first.
    fn forget_first(&mut self) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            self.seen.remove(&key);
        }
    }

    /// Whether the entry expiring first has expired by `now_ms`.
    fn first_expired(&self, now_ms: u64) -> bool {
        self.by_expiry.first().is_some_and(|(expires, _)| *expires <= now_ms)
    }
}

impl JobReplays {
    pub(crate) fn new(capacity: usize) -> Arc<JobReplays> {
        Arc::new(JobReplays { table: Mutex::new(ReplayTable::default()), capacity })
    }

    /// Records that the job signed `signed`, expiring at `expires_ms`,
    /// arrived as stream message `stream_seq`.
    ///
    /// # Errors
    /// [`Rejection::Replayed`] when the same signed job came before in
    /// another stream message.
    pub(crate) fn check(
        &self,
        signed: &Signed,
        stream_seq: u64,
        expires_ms: u64,
        now_ms: u64,
    ) -> std::result::Result<(), Rejection> {
        if signed.sender.is_empty() {
            return Ok(());
        }
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (signed.sender.clone(), signed.seq);
        if let Some((first_seq, _)) = table.seen.get(&key) {
            return if *first_seq == stream_seq { Ok(()) } else { Err(Rejection::Replayed) };
        }
        while table.first_expired(now_ms) {
            table.forget_first();
        }
        if table.seen.len() >= self.capacity {
            table.forget_first();
        }
        table.by_expiry.insert((expires_ms, key.clone()));
        table.seen.insert(key, (stream_seq, expires_ms));
        Ok(())
    }
}

#[cfg(all(test, feature = "nats"))]
mod tests {
    use super::*;

    fn signed_message(signer: &Signer, subject: &str, payload: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID, "g-1");
        signer.sign(subject, &mut headers, payload);
        headers
    }

    #[test]
    fn a_signed_message_passes_and_any_change_fails() {
        let key = FarmKey::from_secret(&[7; 32]);
        let signer = Signer::new(Some(key.clone()));
        let verifier = Verifier::new(Some(key));
        let headers = signed_message(&signer, "tc.jobs", b"job");
        let signed = verifier.verify("tc.jobs", Some(&headers), b"job").unwrap();
        assert_eq!(signed.seq, 1);
        assert_eq!(verifier.verify("tc.jobs", Some(&headers), b"jab"), Err(Rejection::OtherKey));
        assert_eq!(verifier.verify("tc.other", Some(&headers), b"job"), Err(Rejection::OtherKey));
        assert_eq!(verifier.verify("tc.jobs", None, b"job"), Err(Rejection::Unsigned));
        let mut changed_id = headers.clone();
        changed_id.insert(MSG_ID, "g-2");
        assert_eq!(verifier.verify("tc.jobs", Some(&changed_id), b"job"), Err(Rejection::OtherKey));
        let other = Verifier::new(Some(FarmKey::from_secret(&[8; 32])));
        assert_eq!(other.verify("tc.jobs", Some(&headers), b"job"), Err(Rejection::OtherKey));
        // Without a key everything passes, and a signed message is noticed.
        let keyless = Verifier::new(None);
        assert!(keyless.verify("tc.jobs", Some(&headers), b"job").is_ok());
        assert!(keyless.signed_without_key(Some(&headers)));
        assert!(!keyless.signed_without_key(None));
        assert!(!verifier.signed_without_key(Some(&headers)));
    }

    #[test]
    fn a_key_mismatch_is_told_by_kind_and_recent_ones_are_listed() {
        let trouble = KeyTrouble::default();
        assert!(trouble.recent().is_empty());
        assert_eq!(KeyMismatch::of(&Rejection::Replayed), None);
        trouble.noticed(KeyMismatch::of(&Rejection::Unsigned).unwrap(), "a heartbeat from host \"h1\"");
        trouble.noticed(KeyMismatch::OtherKey, "a job");
        trouble.noticed(KeyMismatch::OtherKey, "a result");
        let recent = trouble.recent();
        assert_eq!(recent.len(), 2, "{recent:?}");
        assert!(recent[0].contains("host \"h1\" was not signed") && recent[0].contains("without --farm-key"));
        assert!(recent[1].contains("a result was signed with a different farm key"), "{recent:?}");
        assert_eq!(untrusted_name(&"x".repeat(1000)).len(), MISMATCH_NAME_CHARS + 2);
        assert_eq!(untrusted_name("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn a_flood_of_refused_messages_is_one_line_per_kind_and_a_count() {
        let log = RefusalLog::default();
        assert_eq!(log.unlogged("dropping a job message"), None);
        for _ in 0..1000 {
            log.warn("dropping a job message", &Rejection::BadSignature);
        }
        log.warn("dropping a results message", &Rejection::Replayed);
        // The first of each kind was logged; the other 999 only counted.
        assert_eq!(log.unlogged("dropping a job message"), Some(999));
        assert_eq!(log.unlogged("dropping a results message"), Some(0));
    }

    #[test]
    fn a_signature_header_is_one_short_line_and_malformed_ones_are_refused() {
        let key = FarmKey::from_secret(&[7; 32]);
        let headers = signed_message(&Signer::new(Some(key.clone())), "tc.jobs", b"job");
        let signature = headers.get(SIGNATURE).unwrap().as_str().to_string();
        assert!(signature.len() < 72, "{signature}");
        let (sender, seq, _, mac) = parse_signature(&signature).unwrap();
        assert_eq!((sender.len(), seq, mac.len()), (22, 1, MAC_BYTES));
        let verifier = Verifier::new(Some(key));
        let (prefix, _) = signature.rsplit_once('.').unwrap();
        for bad in
            ["", "a.b.c.d", "s.1.2", "s.1.2.AAAA.extra", &format!("{prefix}.AAAA"), &format!("{prefix}!")]
        {
            let mut forged = headers.clone();
            forged.insert(SIGNATURE, bad);
            assert_eq!(
                verifier.verify("tc.jobs", Some(&forged), b"job"),
                Err(Rejection::BadSignature),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn without_a_key_nothing_is_signed_or_checked() {
        let signer = Signer::new(None);
        let mut headers = HeaderMap::new();
        signer.sign("tc.jobs", &mut headers, b"job");
        assert!(headers.get(SIGNATURE).is_none());
        assert!(Verifier::new(None).verify("tc.jobs", None, b"job").is_ok());
    }

    #[test]
    fn a_heartbeat_counter_must_grow_and_its_time_be_near() {
        let guard = ReplayGuard::default();
        let at = |seq, time_ms| Signed { sender: "h".into(), seq, time_ms };
        assert_eq!(guard.check(&at(1, 1_000_000), 1_000_000), Ok(()));
        assert_eq!(guard.check(&at(2, 1_000_100), 1_000_100), Ok(()));
        assert_eq!(guard.check(&at(2, 1_000_100), 1_000_200), Err(Rejection::Replayed));
        assert_eq!(guard.check(&at(3, 1_000_000), 1_000_000 + 31_000), Err(Rejection::Stale));
    }

    #[test]
    fn a_job_published_twice_is_a_replay_but_a_redelivery_is_not() {
        let replays = JobReplays::new(2);
        let job = Signed { sender: "g".into(), seq: 5, time_ms: 0 };
        assert_eq!(replays.check(&job, 10, 100, 0), Ok(()));
        assert_eq!(replays.check(&job, 10, 100, 0), Ok(()), "the same stream message again");
        assert_eq!(replays.check(&job, 11, 100, 0), Err(Rejection::Replayed));
        // Bounded: a third job pushes out the one expiring first.
        let (a, b) = (Signed { seq: 6, ..job.clone() }, Signed { seq: 7, ..job.clone() });
        assert_eq!(replays.check(&a, 12, 200, 0), Ok(()));
        assert_eq!(replays.check(&b, 13, 300, 0), Ok(()));
        let table = replays.table.lock().unwrap();
        assert_eq!((table.seen.len(), table.by_expiry.len()), (2, 2));
        assert!(!table.seen.contains_key(&("g".to_string(), 5)), "the one expiring first went");
    }

    #[test]
    fn expired_jobs_are_forgotten_as_new_ones_come() {
        let replays = JobReplays::new(100);
        let job = |seq| Signed { sender: "g".into(), seq, time_ms: 0 };
        for seq in 0..10 {
            assert_eq!(replays.check(&job(seq), seq, 1_000 + seq, 0), Ok(()));
        }
        // At 1,005 ms the first six have expired; the next job clears them.
        assert_eq!(replays.check(&job(10), 10, 5_000, 1_005), Ok(()));
        let table = replays.table.lock().unwrap();
        assert_eq!((table.seen.len(), table.by_expiry.len()), (5, 5));
    }

    #[test]
    fn short_key_files_are_refused_with_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("farm.key");
        std::fs::write(&path, "short\n").unwrap();
        let error = FarmKey::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("--farm-key") && error.contains("/dev/urandom"), "{error}");
        std::fs::write(&path, format!("{}\n", "k".repeat(44))).unwrap();
        assert!(FarmKey::from_file(&path).is_ok());
    }
}
