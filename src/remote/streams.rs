//! Creating the streams and consumers the farm runs on (the `nats`
//! feature): their names and settings are in [`super`].

use async_nats::jetstream::{self, consumer, stream};

use super::{
    ACK_WAIT, CONSUMER, CONSUMER_MAX_DELIVER, JOBS_SUBJECT, NO_JETSTREAM_HINT, STREAM, STREAM_MAX_MESSAGES,
};
use crate::error::{Error, Result};

/// The jobs stream's settings, holding at most `max_jobs`.
fn stream_config(max_jobs: i64) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![JOBS_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_messages: max_jobs,
        ..Default::default()
    }
}

/// `get_or_create_stream`, with the race of two processes creating the
/// stream at once settled: both see no stream, both create it, and the
/// second's create fails (nats-server 2.9 says "subjects overlap") — then
/// the stream it lost to is the one to use.
async fn open_stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream, String> {
    let name = config.name.clone();
    match js.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(lost) => js.get_stream(&name).await.map_err(|_| lost.to_string()),
    }
}

/// The jobs stream, created if it does not exist yet (by whichever gateway
/// or host comes first). A gateway passes its `--nats-max-jobs` as
/// `max_jobs` and sets the bound of an existing stream to it; a host passes
/// `None` and leaves an existing stream as it is.
///
/// # Errors
/// NATS has no JetStream (start nats-server with `-js`), or refuses the
/// settings.
pub(crate) async fn jobs_stream(js: &jetstream::Context, max_jobs: Option<i64>) -> Result<stream::Stream> {
    let unusable = |e: &dyn std::fmt::Display| {
        Error::Remote(format!("cannot open the JetStream stream {STREAM} ({e}){NO_JETSTREAM_HINT}"))
    };
    let mut stream = open_stream(js, stream_config(max_jobs.unwrap_or(STREAM_MAX_MESSAGES)))
        .await
        .map_err(|e| unusable(&e))?;
    if let Some(max_jobs) = max_jobs {
        let current = stream.info().await.map_err(|e| unusable(&e))?.config.max_messages;
        if current != max_jobs {
            js.update_stream(stream_config(max_jobs)).await.map_err(|e| unusable(&e))?;
            tracing::info!(from = current, to = max_jobs, "set the jobs stream's bound (--nats-max-jobs)");
        }
    }
    Ok(stream)
}

/// The shared pull consumer of the worker hosts.
///
/// # Errors
/// As [`jobs_stream`].
pub(crate) async fn workers_consumer(stream: &stream::Stream) -> Result<consumer::PullConsumer> {
    stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: CONSUMER_MAX_DELIVER,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::Remote(format!("cannot open the JetStream consumer {CONSUMER}: {e}")))
}
