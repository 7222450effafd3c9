//! The client of `answerloop broker serve`: the broker trait over the
//! [`wire`](super::wire) protocol, so agents in separate processes share one
//! embedded broker.
//!
//! Broker calls take a pooled connection and hand it back when the call
//! succeeded; a connection that failed mid-call is dropped, never reused.
//! Each consumer has a connection of its own. `next_batch` runs its request
//! in a task that owns the connection, so a caller that drops the future
//! (a `select!` on shutdown) loses nothing: the reply is kept and returned
//! by the next call.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::wire::{read_frame, write_frame, Request, Response, PROTOCOL};
use super::{
    Batch, Broker, BrokerError, ChainSpec, Consumer, ConsumerConfig, DeployReport, Record,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RemoteBroker {
    addr: String,
    idle: Mutex<Vec<Connection>>,
}

struct Connection {
    addr: String,
    stream: BufStream<TcpStream>,
}

impl Connection {
    async fn open(addr: &str) -> Result<Self, BrokerError> {
        let unreachable = |reason: String| BrokerError::Unreachable {
            target: format!("the broker at {addr}"),
            reason: format!("{reason} (is `answerloop broker serve` running there?)"),
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable(format!("no answer in {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut connection = Self {
            addr: addr.to_string(),
            stream: BufStream::new(stream),
        };
        connection
            .call(&Request::Hello { protocol: PROTOCOL }, &[])
            .await?;
        Ok(connection)
    }

    /// One request and its reply. A served error is an `Err` like a broken
    /// connection; [`BrokerError::Served`] tells them apart.
    async fn call(
        &mut self,
        request: &Request,
        records: &[Record],
    ) -> Result<(Response, Vec<Record>), BrokerError> {
        let lost = |e: super::wire::WireError| BrokerError::Unreachable {
            target: format!("the broker at {}", self.addr),
            reason: format!("connection lost: {e}"),
        };
        write_frame(&mut self.stream, request, records)
            .await
            .map_err(lost)?;
        match read_frame(&mut self.stream).await.map_err(lost)? {
            Some((Response::Error { message }, _)) => Err(BrokerError::Served(message)),
            Some(reply) => Ok(reply),
            None => Err(BrokerError::Unreachable {
                target: format!("the broker at {}", self.addr),
                reason: "it closed the connection".into(),
            }),
        }
    }
}

impl RemoteBroker {
    /// Connect to the broker served at `addr` (HOST:PORT).
    pub async fn connect(addr: &str) -> Result<Self, BrokerError> {
        let first = Connection::open(addr).await?;
        Ok(Self {
            addr: addr.to_string(),
            idle: Mutex::new(vec![first]),
        })
    }

    async fn call(
        &self,
        request: Request,
        records: Vec<Record>,
    ) -> Result<(Response, Vec<Record>), BrokerError> {
        let pooled = self.idle.lock().expect("pool poisoned").pop();
        let mut connection = match pooled {
            Some(c) => c,
            None => Connection::open(&self.addr).await?,
        };
        let result = connection.call(&request, &records).await;
        if still_usable(&result) {
            self.idle.lock().expect("pool poisoned").push(connection);
        }
        result
    }
}

fn unexpected(reply: Response) -> BrokerError {
    BrokerError::Served(format!("unexpected reply: {reply:?}"))
}

/// Whether a connection can carry another request after this result: only
/// a lost connection ends it (a served error leaves it in step).
fn still_usable<T>(result: &Result<T, BrokerError>) -> bool {
    !matches!(result, Err(BrokerError::Unreachable { .. }))
}

/// A reply that must be `Ok`.
fn expect_ok((reply, _): (Response, Vec<Record>)) -> Result<(), BrokerError> {
    match reply {
        Response::Ok => Ok(()),
        reply => Err(unexpected(reply)),
    }
}

#[async_trait]
impl Broker for RemoteBroker {
    async fn create_topics(&self, topics: &[&str]) -> Result<(), BrokerError> {
        let topics = topics.iter().map(|t| t.to_string()).collect();
        expect_ok(
            self.call(Request::CreateTopics { topics }, Vec::new())
                .await?,
        )
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BrokerError> {
        let request = Request::Partitions {
            topic: topic.to_string(),
        };
        match self.call(request, Vec::new()).await? {
            (Response::Partitions { partitions }, _) => Ok(partitions),
            (reply, _) => Err(unexpected(reply)),
        }
    }

    async fn deploy(&self, topics: &[&str]) -> Result<DeployReport, BrokerError> {
        let topics = topics.iter().map(|t| t.to_string()).collect();
        match self.call(Request::Deploy { topics }, Vec::new()).await? {
            (Response::Deployed { report }, _) => Ok(report),
            (reply, _) => Err(unexpected(reply)),
        }
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
        chain: Option<&ChainSpec>,
    ) -> Result<(), BrokerError> {
        let request = Request::Produce {
            topic: topic.to_string(),
            chain: chain.cloned(),
        };
        expect_ok(self.call(request, records).await?)
    }

    async fn consumer(
        &self,
        topic: &str,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        let mut connection = Connection::open(&self.addr).await?;
        let request = Request::Consume {
            topic: topic.to_string(),
            id: config.id,
            chain: config.chain,
            partition: config.partition,
        };
        expect_ok(connection.call(&request, &[]).await?)?;
        Ok(Box::new(RemoteConsumer {
            connection: Some(connection),
            pending: None,
            kept: None,
        }))
    }
}

type Pending = JoinHandle<(Connection, Result<Batch, BrokerError>)>;

struct RemoteConsumer {
    /// `None` while a request is out, or for good once the connection broke.
    connection: Option<Connection>,
    /// A `next_batch` request whose caller may have gone away.
    pending: Option<Pending>,
    /// A batch that arrived for a caller that had gone away.
    kept: Option<Batch>,
}

impl RemoteConsumer {
    fn connection(&mut self) -> Result<Connection, BrokerError> {
        self.connection
            .take()
            .ok_or_else(|| BrokerError::Unreachable {
                target: "the broker".into(),
                reason: "this consumer's connection was lost earlier".into(),
            })
    }

    /// Wait for the request under way, taking its connection back.
    async fn settle(&mut self) -> Result<Batch, BrokerError> {
        let pending = self.pending.as_mut().expect("a request is pending");
        let joined = pending.await;
        self.pending = None;
        let (connection, result) = joined.map_err(|e| BrokerError::Task(e.to_string()))?;
        if still_usable(&result) {
            self.connection = Some(connection);
        }
        result
    }
}

async fn next(
    mut connection: Connection,
    max: usize,
    wait: Duration,
) -> (Connection, Result<Batch, BrokerError>) {
    let request = Request::Next {
        max,
        wait_ms: wait.as_millis() as u64,
    };
    let result = match connection.call(&request, &[]).await {
        Ok((
            Response::Batch {
                next,
                positions,
                end,
            },
            records,
        )) => Ok(Batch {
            records,
            next,
            positions,
            end,
        }),
        Ok((reply, _)) => Err(unexpected(reply)),
        Err(e) => Err(e),
    };
    (connection, result)
}

#[async_trait]
impl Consumer for RemoteConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BrokerError> {
        if let Some(batch) = self.kept.take() {
            return Ok(batch);
        }
        if self.pending.is_none() {
            let connection = self.connection()?;
            self.pending = Some(tokio::spawn(next(connection, max, wait)));
        }
        self.settle().await
    }

    async fn commit(&mut self, next: u64) -> Result<(), BrokerError> {
        if self.pending.is_some() {
            let batch = self.settle().await?;
            self.kept = Some(batch);
        }
        let mut connection = self.connection()?;
        let result = connection.call(&Request::Commit { next }, &[]).await;
        if still_usable(&result) {
            self.connection = Some(connection);
        }
        expect_ok(result?)
    }
}
