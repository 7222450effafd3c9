//! Serves a broker (the embedded one in practice) to other processes over
//! the [`wire`](super::wire) protocol, so agents can run as separate
//! processes on one home: sled lets only one process open the broker's
//! database.
//!
//! Each connection is served by its own task. A connection that sends
//! `Consume` owns that consumer until it closes; a client that dies (even by
//! SIGKILL) takes nothing with it but uncommitted positions, which its
//! restart reads again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::wire::{read_frame, write_frame, Request, Response, PROTOCOL};
use super::{Broker, BrokerError, Consumer, ConsumerConfig, Record};

/// Accept connections on `listener` until `stop` turns true.
pub async fn serve(
    broker: Arc<dyn Broker>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(broker, stream).await {
                tracing::warn!(%peer, error = %e, "broker connection ended with an error");
            }
        });
    }
}

async fn connection(broker: Arc<dyn Broker>, stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    let mut consumer: Option<Box<dyn Consumer>> = None;
    while let Some((request, records)) = read_frame::<_, Request>(&mut read).await? {
        let (response, records) =
            match handle(broker.as_ref(), &mut consumer, request, records).await {
                Ok(reply) => reply,
                Err(e) => (
                    Response::Error {
                        message: e.to_string(),
                    },
                    Vec::new(),
                ),
            };
        write_frame(&mut write, &response, &records).await?;
    }
    Ok(())
}

async fn handle(
    broker: &dyn Broker,
    consumer: &mut Option<Box<dyn Consumer>>,
    request: Request,
    records: Vec<Record>,
) -> Result<(Response, Vec<Record>), BrokerError> {
    let ok = |response| Ok((response, Vec::new()));
    match request {
        Request::Hello { protocol } if protocol == PROTOCOL => ok(Response::Hello { protocol }),
        Request::Hello { protocol } => Err(BrokerError::Served(format!(
            "protocol {protocol} is not spoken here (this broker speaks {PROTOCOL}): \
             run the same answerloop version on both ends"
        ))),
        Request::CreateTopics { topics } => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            broker.create_topics(&topics).await?;
            ok(Response::Ok)
        }
        Request::Partitions { topic } => ok(Response::Partitions {
            partitions: broker.partitions(&topic).await?,
        }),
        Request::Deploy { topics } => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            ok(Response::Deployed {
                report: broker.deploy(&topics).await?,
            })
        }
        Request::Produce { topic, chain } => {
            broker.produce(&topic, records, chain.as_ref()).await?;
            ok(Response::Ok)
        }
        Request::Consume {
            topic,
            id,
            chain,
            partition,
        } => {
            let config = ConsumerConfig {
                id,
                chain,
                partition,
            };
            *consumer = Some(broker.consumer(&topic, config).await?);
            ok(Response::Ok)
        }
        Request::Next { max, wait_ms } => {
            let batch = consuming(consumer)?
                .next_batch(
                    max.clamp(1, 65_536),
                    Duration::from_millis(wait_ms.min(60_000)),
                )
                .await?;
            Ok((
                Response::Batch {
                    next: batch.next,
                    positions: batch.positions,
                    end: batch.end,
                },
                batch.records,
            ))
        }
        Request::Commit { next } => {
            consuming(consumer)?.commit(next).await?;
            ok(Response::Ok)
        }
    }
}

fn consuming(
    consumer: &mut Option<Box<dyn Consumer>>,
) -> Result<&mut Box<dyn Consumer>, BrokerError> {
    consumer.as_mut().ok_or_else(|| {
        BrokerError::Served("no consumer on this connection: send consume first".into())
    })
}

/// Bind `addr` for [`serve`], with a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot serve the broker on {addr}: {e} (is another broker serving there?)")
    })
}
