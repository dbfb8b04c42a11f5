//! Pulling jobs from the stream, never more than the free slots, and
//! checking each before it may run: the farm key, a replay, its deadline,
//! its gateway still alive, its attempt limit, and this host's own limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;

use super::admission;
use super::held::{Held, HeldJobs, Parcel};
use super::pages::HostCounters;
use super::peers::{Peers, GATEWAY_GONE_AFTER, JUDGE_AFTER};
use super::results::{Answerer, Outcome};
use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::connect::LinkState;
use crate::remote::envelope::{self, now_ms, JobReplays, KeyMismatch, Verifier};
use crate::remote::limits::MAX_PARCEL_JOBS;
use crate::remote::wire::{self, JobParcel};
use crate::runtime::pool::QueuedJob;
use crate::work::job::JobId;

/// How long one pull request waits in JetStream for jobs before it expires
/// (the host then asks again).
pub(super) const FETCH_WAIT: Duration = Duration::from_secs(2);
/// How long after its expiry a pull request still counts as out.
const PULL_GRACE: Duration = Duration::from_secs(1);
/// The longest the fetcher sleeps before it looks again (a delivery or a
/// freed slot wakes it at once; this only bounds a missed wake-up).
const FULL_RECHECK: Duration = Duration::from_millis(100);
/// How long a signed job this keyless host cannot use waits before it is
/// delivered again (to a host with the key, if there is one).
const KEYLESS_NAK_DELAY: Duration = Duration::from_secs(1);
/// What the fetch task needs: the NATS handles, the held jobs, the pool's
/// queue, and the answerer (for parcels answered without running).
pub(super) struct Fetcher {
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) consumer: jetstream::consumer::PullConsumer,
    pub(super) held: Arc<HeldJobs>,
    pub(super) jobs: crossbeam_channel::Sender<QueuedJob>,
    pub(super) slots: usize,
    pub(super) pulling: Arc<AtomicBool>,
    pub(super) checks: JobChecks,
    pub(super) answerer: Arc<Answerer>,
}

/// What a delivered job is checked against before it may run.
pub(super) struct JobChecks {
    pub(super) verifier: Verifier,
    pub(super) replays: Arc<JobReplays>,
    pub(super) peers: Arc<Peers>,
    pub(super) link: Arc<LinkState>,
    pub(super) counters: Arc<HostCounters>,
    pub(super) name: String,
    pub(super) admission: admission::Admission,
}

/// What to do with a delivered job.
enum Verdict {
    /// Run it.
    Run,
    /// Answer it with this error, unrun.
    Refuse(ReplyError),
    /// Drop it unrun and unanswered (the reason is logged and counted):
    /// nobody could use an answer, or it is not ours.
    Drop,
}

impl JobChecks {
    /// The farm key's check of a message, before it is even decoded; when
    /// it fails, what to tell the stream: a message that is not ours ends
    /// there, a signed one this keyless host cannot use goes back (after a
    /// pause) for a host that has the key.
    fn signed(&self, message: &async_nats::Message) -> Result<envelope::Signed, AckKind> {
        if self.verifier.signed_without_key(message.headers.as_ref()) {
            // Its gateway would drop this host's result (unsigned).
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            self.counters.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, "a job from the jobs stream");
            return Err(AckKind::Nak(Some(KEYLESS_NAK_DELAY)));
        }
        self.verifier.verify(message.subject.as_str(), message.headers.as_ref(), &message.payload).map_err(
            |why| {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                match KeyMismatch::of(&why) {
                    Some(mismatch) => {
                        self.counters.key_trouble.noticed(mismatch, "a job from the jobs stream")
                    }
                    None => self.counters.refusals.warn("dropping a job message", &why),
                }
                AckKind::Term
            },
        )
    }

    /// Whether a decoded, signed parcel may run, is answered unrun, or
    /// dropped: all its jobs alike (they share the gateway, the deadline
    /// and the deliveries).
    fn judge(
        &self,
        parcel: &JobParcel,
        signed: &envelope::Signed,
        stream_seq: u64,
        attempts: u32,
    ) -> Verdict {
        let now = now_ms();
        let token = wire::token_hex(parcel.jobs[0].token);
        if let Err(why) = self.replays.check(signed, stream_seq, parcel.expires_ms, now) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            self.counters.refusals.warn("dropping a job sent twice or too long ago", &why);
            tracing::debug!(job = %token, %why, "dropping a job");
            return Verdict::Drop;
        }
        if now > parcel.expires_ms {
            self.counters.expired.fetch_add(parcel.jobs.len() as u64, Ordering::Relaxed);
            tracing::info!(job = %token, jobs = parcel.jobs.len(), gateway = %parcel.gateway, "dropping a job past its deadline: its gateway has answered it");
            return Verdict::Drop;
        }
        // Judged only on a link up long enough to have heard every gateway
        // (and, for a gateway's death, to have heard its whole silence).
        let up_for = self.link.up_for();
        let judging = up_for >= JUDGE_AFTER;
        if up_for >= GATEWAY_GONE_AFTER && self.peers.gateway_gone(&parcel.gateway, Instant::now()) {
            self.counters.orphaned.fetch_add(parcel.jobs.len() as u64, Ordering::Relaxed);
            tracing::info!(job = %token, gateway = %parcel.gateway, "dropping a job of a gateway gone silent: nobody would read its result");
            return Verdict::Drop;
        }
        if attempts > 1 {
            tracing::info!(job = %token, delivery = attempts, "a job delivered again");
        }
        if attempts <= parcel.max_attempts {
            return Verdict::Run;
        }
        let holder = self.peers.held_elsewhere(&self.name, &token, Instant::now());
        if !judging || holder.is_some() {
            // The broker redelivered a job its holder still works on (or
            // this host cannot tell yet): not a crash. Run it; the gateway
            // keeps the first result.
            self.counters.redeliveries_excused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job = %token, delivery = attempts, holder = ?holder, "redelivered past the attempt limit, but its holder is alive or the link just came back: not counted as a crash");
            return Verdict::Run;
        }
        Verdict::Refuse(ReplyError::new(
            ErrorCode::WorkerCrashed,
            format!(
                "the job was delivered {attempts} times and its worker host died or hung each time \
                 (at most {} allowed, --retries)",
                parcel.max_attempts
            ),
        ))
    }
}

/// The pull request this host has out: its token, how many jobs it may
/// still bring, and when the host stops counting on it (the server's expiry
/// plus a grace, in case its "request timeout" status was lost with a
/// connection).
struct Pull {
    token: u64,
    wanted: usize,
    forget_at: tokio::time::Instant,
}

/// Pulls jobs, never more than the free slots, while `pulling`; after that
/// (draining) hands back anything a request still out brings.
///
/// One subscription serves every pull request, each with its own reply
/// subject `<inbox>.<n>`: a fetch per request would subscribe and
/// unsubscribe for every job, which costs the NATS server more than the
/// job's own messages. Only one request is out at a time, so every
/// delivery belongs to it and `held + asked <= slots` holds exactly (a
/// delivery carries the job's own subject, not the request's; a status —
/// 408 expired, 409 refused — carries the request's, hence the token).
/// With jobs waiting in the stream a request is answered at once, so one
/// at a time costs nothing; a slot that frees while a request waits on an
/// empty stream asks as soon as that request ends.
pub(super) async fn fetch_jobs(fetcher: Fetcher) {
    let inbox = fetcher.client.new_inbox();
    let mut deliveries = subscribe_for_jobs(&fetcher.client, &inbox).await;
    let mut pull: Option<Pull> = None;
    let mut next_token: u64 = 0;
    let mut next_id: JobId = 0;
    loop {
        let now = tokio::time::Instant::now();
        if pull.as_ref().is_some_and(|pull| pull.forget_at <= now) {
            pull = None;
        }
        let free = fetcher.slots.saturating_sub(fetcher.held.parcels());
        if pull.is_none() && free > 0 && fetcher.pulling.load(Ordering::SeqCst) {
            next_token += 1;
            let request = jetstream::consumer::pull::BatchConfig {
                batch: free,
                expires: Some(FETCH_WAIT),
                ..Default::default()
            };
            match fetcher.consumer.request_batch(request, format!("{inbox}.{next_token}").into()).await {
                Ok(()) => {
                    let forget_at = now + FETCH_WAIT + PULL_GRACE;
                    pull = Some(Pull { token: next_token, wanted: free, forget_at });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pull jobs from NATS; retrying");
                    tokio::time::sleep(FETCH_WAIT).await;
                    continue;
                }
            }
        }
        // Wake for a delivery, a freed slot, or the request to forget.
        let wake_at = pull.as_ref().map_or(now + FULL_RECHECK, |pull| pull.forget_at.min(now + FULL_RECHECK));
        let message = tokio::select! {
            message = deliveries.next() => message,
            _ = fetcher.held.freed.notified() => continue,
            _ = tokio::time::sleep_until(wake_at) => continue,
        };
        let Some(message) = message else {
            tracing::warn!("the job subscription ended");
            return;
        };
        if !counts_against(&mut pull, &message) {
            continue; // a status, not a job
        }
        let message = jetstream::Message { message, context: fetcher.js.clone() };
        for queued in take_delivery(&fetcher, message, &mut next_id).await {
            if let Err(full) = fetcher.jobs.try_send(queued) {
                // Cannot happen: the queue has room for a full parcel per
                // slot. Were it to, the job goes back with its parcel.
                if let Some((parcel, settled)) = fetcher.held.settle(full.into_inner().id, |_| None) {
                    fetcher.answerer.send(&parcel, settled).await;
                }
            }
        }
    }
}

/// The one subscription every pull request's deliveries come to (retried
/// until NATS takes it).
async fn subscribe_for_jobs(client: &async_nats::Client, inbox: &str) -> async_nats::Subscriber {
    loop {
        match client.subscribe(format!("{inbox}.*")).await {
            Ok(subscription) => return subscription,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe for jobs; retrying");
                tokio::time::sleep(FETCH_WAIT).await;
            }
        }
    }
}

/// Whether `message` is a job (and so uses up one of the pull's places);
/// a status ends the pull it names, or is a heartbeat of the request.
fn counts_against(pull: &mut Option<Pull>, message: &async_nats::Message) -> bool {
    match message.status {
        None | Some(async_nats::StatusCode::OK) => {
            if let Some(current) = pull.as_mut() {
                current.wanted = current.wanted.saturating_sub(1);
                if current.wanted == 0 {
                    *pull = None;
                }
            }
            true
        }
        Some(async_nats::StatusCode::IDLE_HEARTBEAT) => false,
        Some(status) => {
            // 408: the request expired; 409: refused or ended (e.g. the
            // consumer's limit of waiting requests). Either way it is over.
            if status != async_nats::StatusCode::TIMEOUT {
                tracing::debug!(%status, description = ?message.description, "pull request ended");
            }
            let token = message.subject.rsplit('.').next().and_then(|n| n.parse::<u64>().ok());
            if pull.as_ref().is_some_and(|pull| Some(pull.token) == token) {
                *pull = None;
            }
            false
        }
    }
}

/// One delivered parcel: checked, then its jobs held and returned for the
/// pool — or handed back, answered unrun, or dropped, each acknowledged as
/// it must be. A job the host's own limits refuse is answered in its
/// parcel's results, beside the others.
async fn take_delivery(
    fetcher: &Fetcher,
    message: jetstream::Message,
    next_id: &mut JobId,
) -> Vec<QueuedJob> {
    let checks = &fetcher.checks;
    if !fetcher.pulling.load(Ordering::SeqCst) || fetcher.held.parcels() >= fetcher.slots {
        // Draining, or a late delivery for a request already forgotten:
        // straight back to the stream, for another host.
        let _ = message.ack_with(AckKind::Nak(None)).await;
        return Vec::new();
    }
    let (attempts, stream_seq) =
        message.info().map(|info| (info.delivered as u32, info.stream_sequence)).unwrap_or((1, 0));
    let signed = match checks.signed(&message) {
        Ok(signed) => signed,
        Err(answer) => {
            let _ = message.ack_with(answer).await;
            return Vec::new();
        }
    };
    let parcel: JobParcel = match wire::decode::<JobParcel>(&message.payload) {
        Ok(parcel) if (1..=MAX_PARCEL_JOBS).contains(&parcel.jobs.len()) => parcel,
        Ok(parcel) => {
            let why = format!("{} jobs in it: a gateway sends 1 to {MAX_PARCEL_JOBS}", parcel.jobs.len());
            checks.counters.rejected.fetch_add(1, Ordering::Relaxed);
            checks.counters.refusals.warn("dropping a message of too many jobs, or none", &why);
            let _ = message.ack_with(AckKind::Term).await;
            return Vec::new();
        }
        Err(e) => {
            checks.counters.rejected.fetch_add(1, Ordering::Relaxed);
            checks.counters.refusals.warn("dropping a message that is not a job", &e);
            let _ = message.ack_with(AckKind::Term).await;
            return Vec::new();
        }
    };
    let verdict = checks.judge(&parcel, &signed, stream_seq, attempts);
    let JobParcel { gateway, reply_to, expires_ms, jobs, .. } = parcel;
    let first_token = jobs[0].token;
    let answerer = &fetcher.answerer;
    let mut refused = Vec::new();
    let mut runnable = Vec::new();
    match verdict {
        Verdict::Drop => {
            let _ = message.ack_with(AckKind::Term).await;
            return Vec::new();
        }
        Verdict::Refuse(error) => {
            for job in jobs {
                let outcome = Outcome::refused(error.clone());
                refused.push(answerer.result((job.job, job.token), attempts, outcome));
            }
        }
        // Then the host's own limits, as a gateway checks a request.
        Verdict::Run => {
            for job in jobs {
                match checks.admission.admit(job.kind) {
                    Ok(kind) => runnable.push((job.job, job.token, kind)),
                    Err(error) => {
                        checks
                            .counters
                            .refusals
                            .warn("refusing a job over this host's own limits", &error.message);
                        refused.push(answerer.result(
                            (job.job, job.token),
                            attempts,
                            Outcome::refused(error),
                        ));
                    }
                }
            }
        }
    }
    let parcel = Arc::new(Parcel::new(
        message,
        (gateway, reply_to, expires_ms),
        (attempts, first_token),
        (runnable.len(), refused),
    ));
    if runnable.is_empty() {
        answerer.send(&parcel, parcel.settle_all()).await;
        return Vec::new();
    }
    fetcher.held.parcel_taken();
    let accepted_at = Instant::now();
    runnable
        .into_iter()
        .map(|(job, token, kind)| {
            *next_id += 1;
            fetcher.held.insert(*next_id, Held { parcel: Arc::clone(&parcel), job, token });
            QueuedJob { id: *next_id, kind, accepted_at, attempt: attempts }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str, status: Option<async_nats::StatusCode>) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: None,
            status,
            description: None,
            length: 0,
        }
    }

    fn pull(token: u64, wanted: usize) -> Option<Pull> {
        Some(Pull { token, wanted, forget_at: tokio::time::Instant::now() })
    }

    #[test]
    fn each_job_uses_a_place_of_the_pull_and_the_last_one_ends_it() {
        let mut current = pull(3, 2);
        assert!(counts_against(&mut current, &message("tc.jobs", None)));
        assert_eq!(current.as_ref().map(|p| p.wanted), Some(1));
        assert!(counts_against(&mut current, &message("tc.jobs", None)));
        assert!(current.is_none(), "both places used: the host may ask again");
    }

    #[test]
    fn a_status_ends_only_the_pull_it_names_and_a_heartbeat_nothing() {
        let mut current = pull(3, 2);
        assert!(!counts_against(
            &mut current,
            &message("_INBOX.x.3", Some(async_nats::StatusCode::IDLE_HEARTBEAT))
        ));
        assert!(current.is_some());
        // A late "expired" of an earlier request leaves the current one out.
        assert!(!counts_against(&mut current, &message("_INBOX.x.2", Some(async_nats::StatusCode::TIMEOUT))));
        assert!(current.is_some());
        assert!(!counts_against(&mut current, &message("_INBOX.x.3", Some(async_nats::StatusCode::TIMEOUT))));
        assert!(current.is_none());
    }
}
