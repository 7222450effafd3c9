//! The embedded broker served over TCP (`answerloop broker serve`) and its
//! client: the same semantics as in-process, a dropped read loses nothing,
//! and bad peers get clear errors without harming other clients.

use std::sync::Arc;
use std::time::Duration;

use answerloop_broker::embedded::EmbeddedBroker;
use answerloop_broker::remote::RemoteBroker;
use answerloop_broker::{server, Broker, ChainSpec, ConsumerConfig, Record};
use answerloop_schema::{Answer, Question, Scored};
use answerloop_scoring::Params;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const NO_WAIT: Duration = Duration::ZERO;

struct Served {
    addr: String,
    embedded: Arc<EmbeddedBroker>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Arc::new(EmbeddedBroker::open(&dir.path().join("broker")).unwrap());
    embedded.create_topics(&["t"]).await.unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(server::serve(embedded.clone(), listener, stopped));
    Served {
        addr,
        embedded,
        _stop: stop,
        _dir: dir,
    }
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect()
}

fn numbered(from: usize, n: usize) -> Vec<Record> {
    (from..from + n)
        .map(|i| Record::keyed(format!("k{i}"), format!("v{i}")))
        .collect()
}

#[tokio::test]
async fn produce_consume_and_commit_work_as_in_process() {
    let served = serve().await;
    let remote = RemoteBroker::connect(&served.addr).await.unwrap();
    remote.produce("t", numbered(0, 3), None).await.unwrap();
    remote.produce("t", numbered(3, 2), None).await.unwrap();
    assert_eq!(served.embedded.topic_len("t").unwrap(), 5);
    assert_eq!(remote.partitions("t").await.unwrap(), 1);

    let mut c = remote
        .consumer("t", ConsumerConfig::committed("c", None))
        .await
        .unwrap();
    let batch = c.next_batch(3, NO_WAIT).await.unwrap();
    assert_eq!(values(&batch.records), ["v0", "v1", "v2"]);
    assert_eq!(batch.records[0].key.as_deref(), Some(&b"k0"[..]));
    assert_eq!((batch.next, batch.end), (3, Some(5)));
    assert_eq!(batch.positions, [1, 2, 3]);
    c.commit(batch.next).await.unwrap();
    // Read on without committing, then drop the consumer as a killed agent would.
    assert_eq!(c.next_batch(10, NO_WAIT).await.unwrap().records.len(), 2);
    drop(c);
    assert_eq!(served.embedded.committed("t", "c").unwrap(), Some(3));

    let mut again = remote
        .consumer("t", ConsumerConfig::committed("c", None))
        .await
        .unwrap();
    assert_eq!(
        values(&again.next_batch(10, NO_WAIT).await.unwrap().records),
        ["v3", "v4"],
        "a new consumer with the id resumes at the committed offset"
    );
}

#[tokio::test]
async fn a_read_dropped_while_waiting_loses_no_record() {
    let served = serve().await;
    let remote = Arc::new(RemoteBroker::connect(&served.addr).await.unwrap());
    let mut c = remote
        .consumer("t", ConsumerConfig::committed("c", None))
        .await
        .unwrap();
    // The caller gives up on a long read (as a shutdown select! does)...
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        c.next_batch(10, Duration::from_secs(2)),
    )
    .await;
    assert!(gave_up.is_err(), "nothing was there to read yet");
    // ...a record arrives while the abandoned request is still waiting...
    remote.produce("t", numbered(0, 1), None).await.unwrap();
    // ...and the next read returns it, once.
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(values(
            &c.next_batch(10, Duration::from_millis(200))
                .await
                .unwrap()
                .records,
        ));
    }
    assert_eq!(seen, ["v0"]);
    // A commit right after an abandoned read keeps that read's records too.
    remote.produce("t", numbered(1, 1), None).await.unwrap();
    let abandoned = c.next_batch(10, Duration::from_secs(1)).now_or_never();
    assert!(abandoned.is_none(), "one poll cannot finish a round trip");
    c.commit(1).await.unwrap();
    assert_eq!(
        values(&c.next_batch(10, NO_WAIT).await.unwrap().records),
        ["v1"]
    );
}

#[tokio::test]
async fn smartmodule_chains_run_in_the_serving_process() {
    let served = serve().await;
    let remote = RemoteBroker::connect(&served.addr).await.unwrap();
    remote.create_topics(&["answers"]).await.unwrap();
    let params = Params::default();
    let score = ChainSpec::single(answerloop_wasm::ANSWER_SCORE.name, &params);
    let question = Question::new(
        "Why is the sky blue?",
        "",
        "Rayleigh scattering of sunlight.",
        1,
    );
    let answer = Answer::new(question, "Because of Rayleigh scattering.", "m", 1);
    let record = Record::keyed("q", serde_json::to_vec(&answer).unwrap());
    remote
        .produce("answers", vec![record], Some(&score))
        .await
        .unwrap();
    let mut c = remote
        .consumer("answers", ConsumerConfig::scan())
        .await
        .unwrap();
    let batch = c.next_batch(10, NO_WAIT).await.unwrap();
    match Scored::decode(&batch.records[0].value) {
        Scored::Answer(a) => assert!(a.score.is_some() && a.verdict.is_some(), "{a:?}"),
        Scored::Invalid(e) => panic!("not scored: {e:?}"),
    }
}

#[tokio::test]
async fn errors_name_the_topic_and_the_address() {
    let served = serve().await;
    let remote = RemoteBroker::connect(&served.addr).await.unwrap();
    let err = remote
        .produce("nope", numbered(0, 1), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"nope\""), "{err}");
    // The connection that carried an error still works.
    remote.produce("t", numbered(0, 1), None).await.unwrap();

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let err = match RemoteBroker::connect(&addr).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr) && err.contains("broker serve"), "{err}");
}

#[tokio::test]
async fn a_hostile_peer_is_cut_off_and_others_are_served() {
    let served = serve().await;
    // A length far over the frame limit, then garbage.
    let mut hostile = tokio::net::TcpStream::connect(&served.addr).await.unwrap();
    hostile.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    hostile.write_all(b"garbage").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), hostile.read(&mut buf))
        .await
        .expect("the server closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "no reply to a hostile frame");
    // A well-formed frame whose header is no request is cut off too, not left hanging.
    let mut confused = tokio::net::TcpStream::connect(&served.addr).await.unwrap();
    let header = br#"{"op":"launch"}"#;
    let mut frame = Vec::new();
    frame.extend_from_slice(&((4 + header.len() + 4) as u32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    frame.extend_from_slice(&0u32.to_be_bytes());
    confused.write_all(&frame).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), confused.read(&mut buf))
        .await
        .expect("the server answers or closes")
        .unwrap_or(0);
    assert_eq!(n, 0, "an unknown request closes the connection");

    let remote = RemoteBroker::connect(&served.addr).await.unwrap();
    remote.produce("t", numbered(0, 1), None).await.unwrap();
    assert_eq!(served.embedded.topic_len("t").unwrap(), 1);
}
