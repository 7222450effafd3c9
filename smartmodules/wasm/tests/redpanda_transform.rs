//! `answer-score-transform` (the `.wasm` the binary ships) run under wasmtime
//! with a host for Redpanda's Data Transform ABI, and compared with the
//! Fluvio SmartModule `answer-score` run through fluvio-smartengine.
//!
//! No Redpanda broker runs here. The host below is written after Redpanda's
//! sources (`src/v/wasm/transform_module.cc`, `model/transform.cc`,
//! `wasmtime.cc`) and the SDK's side of the contract
//! (`redpanda-transform-sdk-sys` 1.1.0):
//!
//! - module `redpanda_transform`: `check_abi_version_1/2` (no-ops),
//!   `read_batch_header` (blocks until a batch comes; returns the largest
//!   record payload of the batch), `read_next_record` (the record's payload:
//!   everything after the attributes, timestamp delta and offset delta of the
//!   Kafka record), `write_record` and `write_record_with_options` (a payload
//!   of key, value and headers, validated as Redpanda does; options are
//!   `0x01` then a sized topic name). Errors: -1 no active transform, -2
//!   invalid buffer, -3 invalid write (here: a topic that is not an output).
//! - WASI preview 1 (wasi-common, as fluvio-smartengine uses) with
//!   `REDPANDA_INPUT_TOPIC`, `REDPANDA_OUTPUT_TOPIC_<i>` and the transform's
//!   own variables in the environment, and a 128 KiB wasm stack as in
//!   Redpanda's engine.
//!
//! The guest never returns: it loops on `read_batch_header`. When the test's
//! batches run out, the host ends the run with a trap it recognises.

use std::collections::VecDeque;
use std::sync::OnceLock;

use answerloop_schema::{Answer, InvalidRecord, Question, Verdict};
use answerloop_wasm::{ANSWER_SCORE, ANSWER_SCORE_TRANSFORM};
use fluvio_smartengine::{SmartEngine, SmartModuleChainBuilder, SmartModuleConfig};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::Record as FluvioRecord;
use wasi_common::pipe::WritePipe;
use wasi_common::sync::WasiCtxBuilder;
use wasi_common::WasiCtx;
use wasmtime::{Caller, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder};

const INPUT_TOPIC: &str = "answers";
const OUTPUT_TOPIC: &str = "answers-scored";
const INVALID_TOPIC: &str = "answers-invalid";
/// The linear memory the transform may grow to here. `docs/operations.md`
/// asks for at least this as `data_transforms_per_function_memory_limit`.
const MEMORY_LIMIT: usize = 16 << 20;
/// Redpanda's engine gives a transform this much wasm stack.
const MAX_WASM_STACK: usize = 128 << 10;

const NO_ACTIVE_TRANSFORM: i32 = -1;
const INVALID_BUFFER: i32 = -2;
const INVALID_WRITE: i32 = -3;

const REFERENCE: &str = "Ice floats because frozen water is less dense than liquid water.";
const GOOD: &str = "Frozen water is less dense, so ice floats on top.";
const BAD: &str = "Mortgage rates depend on the central bank.";

// ---------------------------------------------------------------- records --

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Rec {
    fn value(v: Vec<u8>) -> Self {
        Rec {
            key: None,
            value: Some(v),
            headers: Vec::new(),
        }
    }
}

/// Zigzag varint, as Kafka's record format (and Redpanda's `vint`) has it.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut u: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        u |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((u >> 1) as i64) ^ -((u & 1) as i64));
        }
    }
    None
}

fn put_sized(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// `Some(None)` for a null (-1), `None` when malformed.
fn get_sized(buf: &[u8], at: &mut usize) -> Option<Option<Vec<u8>>> {
    let len = get_varint(buf, at)?;
    match len {
        -1 => Some(None),
        n if n < -1 => None,
        n => {
            let end = at.checked_add(n as usize)?;
            let bytes = buf.get(*at..end)?.to_vec();
            *at = end;
            Some(Some(bytes))
        }
    }
}

/// Key, value and headers: the payload the ABI passes both ways.
fn encode_payload(r: &Rec) -> Vec<u8> {
    let mut out = Vec::new();
    put_sized(&mut out, r.key.as_deref());
    put_sized(&mut out, r.value.as_deref());
    put_varint(&mut out, r.headers.len() as i64);
    for (k, v) in &r.headers {
        put_sized(&mut out, Some(k));
        put_sized(&mut out, v.as_deref());
    }
    out
}

/// Redpanda's `validate_record_payload`, then the record itself.
fn decode_payload(buf: &[u8]) -> Option<Rec> {
    let mut at = 0;
    let key = get_sized(buf, &mut at)?;
    let value = get_sized(buf, &mut at)?;
    let count = get_varint(buf, &mut at)?;
    if count < 0 {
        return None;
    }
    let mut headers = Vec::new();
    for _ in 0..count {
        let k = get_sized(buf, &mut at)?.unwrap_or_default();
        let v = get_sized(buf, &mut at)?;
        headers.push((k, v));
    }
    (at == buf.len()).then_some(Rec {
        key,
        value,
        headers,
    })
}

/// A Kafka record (format v2) inside a batch: length, attributes,
/// timestamp delta, offset delta, then the payload.
fn encode_kafka_record(r: &Rec, offset_delta: i64, timestamp_delta: i64) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    put_varint(&mut body, timestamp_delta);
    put_varint(&mut body, offset_delta);
    body.extend(encode_payload(r));
    let mut out = Vec::new();
    put_varint(&mut out, body.len() as i64);
    out.extend(body);
    out
}

// ------------------------------------------------------------------ host --

struct InputBatch {
    base_offset: i64,
    first_timestamp: i64,
    record_count: i32,
    /// The records section of the batch, as it sits in the log.
    data: Vec<u8>,
}

struct PendingRecord {
    attributes: u8,
    timestamp: i64,
    offset: i64,
    payload: Vec<u8>,
}

/// One write the guest made: the topic it named (None: the default output).
#[derive(Debug)]
struct Written {
    topic: Option<String>,
    record: Rec,
}

struct Host {
    wasi: WasiCtx,
    limits: StoreLimits,
    output_topics: Vec<String>,
    batches: VecDeque<InputBatch>,
    records: VecDeque<PendingRecord>,
    written: Vec<Written>,
}

/// How the host ends the guest's endless loop once the input is used up.
#[derive(Debug)]
struct EndOfInput;

impl std::fmt::Display for EndOfInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no more batches")
    }
}

impl std::error::Error for EndOfInput {}

impl Host {
    /// As `transform_module::for_each_record_async`: split the batch into
    /// records and keep each one's payload and metadata.
    fn start_batch(&mut self, batch: &InputBatch) -> usize {
        let mut at = 0;
        let mut max = 0;
        while at < batch.data.len() {
            let size = get_varint(&batch.data, &mut at).expect("record size") as usize;
            let end = at + size;
            let attributes = batch.data[at];
            at += 1;
            let ts_delta = get_varint(&batch.data, &mut at).expect("timestamp delta");
            let offset_delta = get_varint(&batch.data, &mut at).expect("offset delta");
            let payload = batch.data[at..end].to_vec();
            at = end;
            max = max.max(payload.len());
            self.records.push_back(PendingRecord {
                attributes,
                // create-time batch: first timestamp + the record's delta
                timestamp: batch.first_timestamp + ts_delta,
                offset: batch.base_offset + offset_delta,
                payload,
            });
        }
        assert_eq!(self.records.len(), batch.record_count as usize);
        max
    }
}

fn memory(caller: &mut Caller<'_, Host>) -> wasmtime::Result<wasmtime::Memory> {
    caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))
}

fn write_mem(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    memory(caller)?.write(caller, ptr as u32 as usize, bytes)?;
    Ok(())
}

fn read_mem(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mut buf = vec![0; len as u32 as usize];
    memory(caller)?.read(&*caller, ptr as u32 as usize, &mut buf)?;
    Ok(buf)
}

/// Redpanda's `write_options::parse`: empty, or `0x01` and a sized topic.
fn parse_write_options(buf: &[u8]) -> Option<Option<String>> {
    if buf.is_empty() {
        return Some(None);
    }
    if buf[0] != 0x01 {
        return None;
    }
    let mut at = 1;
    let topic = get_sized(buf, &mut at)??;
    (at == buf.len()).then(|| String::from_utf8(topic).ok().map(Some))?
}

fn emit(host: &mut Host, payload: &[u8], topic: Option<String>) -> i32 {
    let Some(record) = decode_payload(payload) else {
        return INVALID_BUFFER;
    };
    if let Some(t) = &topic {
        if !host.output_topics.contains(t) {
            return INVALID_WRITE;
        }
    }
    host.written.push(Written { topic, record });
    payload.len() as i32
}

fn add_redpanda_transform(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    const M: &str = "redpanda_transform";
    linker.func_wrap(M, "check_abi_version_1", || {})?;
    linker.func_wrap(M, "check_abi_version_2", || {})?;
    linker.func_wrap(
        M,
        "read_batch_header",
        |mut caller: Caller<'_, Host>,
         base_offset: i32,
         record_count: i32,
         partition_leader_epoch: i32,
         attributes: i32,
         last_offset_delta: i32,
         base_timestamp: i32,
         max_timestamp: i32,
         producer_id: i32,
         producer_epoch: i32,
         base_sequence: i32|
         -> wasmtime::Result<i32> {
            // Asking for the next batch means the last one is done.
            let Some(batch) = caller.data_mut().batches.pop_front() else {
                return Err(wasmtime::Error::new(EndOfInput));
            };
            let max = caller.data_mut().start_batch(&batch);
            let last_ts = batch.first_timestamp + i64::from(batch.record_count - 1);
            write_mem(&mut caller, base_offset, &batch.base_offset.to_le_bytes())?;
            write_mem(&mut caller, record_count, &batch.record_count.to_le_bytes())?;
            write_mem(&mut caller, partition_leader_epoch, &1i32.to_le_bytes())?;
            write_mem(&mut caller, attributes, &0i16.to_le_bytes())?;
            write_mem(
                &mut caller,
                last_offset_delta,
                &(batch.record_count - 1).to_le_bytes(),
            )?;
            write_mem(
                &mut caller,
                base_timestamp,
                &batch.first_timestamp.to_le_bytes(),
            )?;
            write_mem(&mut caller, max_timestamp, &last_ts.to_le_bytes())?;
            write_mem(&mut caller, producer_id, &(-1i64).to_le_bytes())?;
            write_mem(&mut caller, producer_epoch, &(-1i16).to_le_bytes())?;
            write_mem(&mut caller, base_sequence, &(-1i32).to_le_bytes())?;
            Ok(max as i32)
        },
    )?;
    linker.func_wrap(
        M,
        "read_next_record",
        |mut caller: Caller<'_, Host>,
         attributes: i32,
         timestamp: i32,
         offset: i32,
         buf: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let Some(front) = caller.data().records.front() else {
                return Ok(NO_ACTIVE_TRANSFORM);
            };
            if (len as u32 as usize) < front.payload.len() {
                return Ok(INVALID_BUFFER);
            }
            let r = caller.data_mut().records.pop_front().expect("front");
            write_mem(&mut caller, attributes, &[r.attributes])?;
            write_mem(&mut caller, timestamp, &r.timestamp.to_le_bytes())?;
            write_mem(&mut caller, offset, &r.offset.to_le_bytes())?;
            write_mem(&mut caller, buf, &r.payload)?;
            Ok(r.payload.len() as i32)
        },
    )?;
    linker.func_wrap(
        M,
        "write_record",
        |mut caller: Caller<'_, Host>, buf: i32, len: i32| -> wasmtime::Result<i32> {
            let payload = read_mem(&mut caller, buf, len)?;
            Ok(emit(caller.data_mut(), &payload, None))
        },
    )?;
    linker.func_wrap(
        M,
        "write_record_with_options",
        |mut caller: Caller<'_, Host>,
         buf: i32,
         len: i32,
         opts: i32,
         opts_len: i32|
         -> wasmtime::Result<i32> {
            let payload = read_mem(&mut caller, buf, len)?;
            let options = read_mem(&mut caller, opts, opts_len)?;
            let Some(topic) = parse_write_options(&options) else {
                return Ok(INVALID_BUFFER);
            };
            Ok(emit(caller.data_mut(), &payload, topic))
        },
    )?;
    Ok(())
}

fn engine_and_module() -> &'static (Engine, Module) {
    static COMPILED: OnceLock<(Engine, Module)> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.max_wasm_stack(MAX_WASM_STACK);
        let engine = Engine::new(&config).expect("engine");
        let module = Module::new(&engine, ANSWER_SCORE_TRANSFORM).expect("the transform compiles");
        (engine, module)
    })
}

/// What a run of the transform gave: its writes, or why it stopped.
struct Run {
    written: Vec<Written>,
    stderr: String,
    failure: Option<String>,
    memory_bytes: usize,
}

/// Deploy the transform with `output_topics` and `env`, feed it `batches`.
fn run_transform(output_topics: &[&str], env: &[(&str, &str)], batches: &[Vec<Rec>]) -> Run {
    let (engine, module) = engine_and_module();
    let mut vars = vec![("REDPANDA_INPUT_TOPIC".to_string(), INPUT_TOPIC.to_string())];
    for (i, t) in output_topics.iter().enumerate() {
        vars.push((format!("REDPANDA_OUTPUT_TOPIC_{i}"), t.to_string()));
    }
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let stderr = WritePipe::new_in_memory();
    let wasi = WasiCtxBuilder::new()
        .args(&["answer-score-transform".to_string()])
        .expect("args")
        .envs(&vars)
        .expect("env")
        .stderr(Box::new(stderr.clone()))
        .build();

    let mut offset = 0i64;
    let inputs = batches
        .iter()
        .map(|records| {
            let first_timestamp = 1_700_000_000_000 + offset;
            let mut data = Vec::new();
            for (i, r) in records.iter().enumerate() {
                data.extend(encode_kafka_record(r, i as i64, i as i64));
            }
            let batch = InputBatch {
                base_offset: offset,
                first_timestamp,
                record_count: records.len() as i32,
                data,
            };
            offset += records.len() as i64;
            batch
        })
        .collect();

    let host = Host {
        wasi,
        limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build(),
        output_topics: output_topics.iter().map(|t| t.to_string()).collect(),
        batches: inputs,
        records: VecDeque::new(),
        written: Vec::new(),
    };
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    let mut linker = Linker::new(engine);
    wasi_common::sync::add_to_linker(&mut linker, |h: &mut Host| &mut h.wasi).expect("wasi");
    add_redpanda_transform(&mut linker).expect("redpanda_transform");

    let instance = linker.instantiate(&mut store, module);
    let result = instance
        .as_ref()
        .map_err(|e| wasmtime::Error::msg(format!("{e:?}")))
        .and_then(|instance| {
            instance
                .get_typed_func::<(), ()>(&mut store, "_start")?
                .call(&mut store, ())
        });
    let failure = match result {
        Ok(()) => Some("the transform returned; it should loop for ever".to_string()),
        Err(e) if e.downcast_ref::<EndOfInput>().is_some() => None,
        Err(e) => Some(format!("{e:?}")),
    };
    let memory_bytes = instance
        .ok()
        .and_then(|i| i.get_memory(&mut store, "memory"))
        .map_or(0, |m| m.data_size(&store));
    let written = std::mem::take(&mut store.data_mut().written);
    drop(store);
    let stderr =
        String::from_utf8_lossy(&stderr.try_into_inner().expect("sole owner").into_inner())
            .into_owned();
    Run {
        written,
        stderr,
        failure,
        memory_bytes,
    }
}

impl Run {
    fn ok(self) -> Vec<Written> {
        assert!(
            self.failure.is_none(),
            "the transform failed: {}\nstderr: {}",
            self.failure.unwrap_or_default(),
            self.stderr
        );
        self.written
    }
}

// ------------------------------------------------------------ smartmodule --

/// The Fluvio SmartModule `answer-score` on the same values, through
/// fluvio-smartengine (as the embedded broker and Fluvio's SPU run it).
fn smartmodule(params: &[(&str, &str)], values: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut config = SmartModuleConfig::builder();
    config.smartmodule_names(vec![ANSWER_SCORE.name.to_string()]);
    for (k, v) in params {
        config.param(*k, *v);
    }
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(config.build().unwrap(), ANSWER_SCORE.wasm.to_vec());
    let mut chain = builder.initialize(&SmartEngine::new()).expect("chain");
    let records = values.iter().cloned().map(FluvioRecord::new).collect();
    let input = SmartModuleInput::try_from_records(records, 0).expect("input");
    let output = chain.process(input).expect("process");
    assert!(output.error.is_none(), "{:?}", output.error);
    output
        .successes
        .into_iter()
        .map(|r| r.value.as_ref().to_vec())
        .collect()
}

// ------------------------------------------------------------------ data --

fn answer(text: &str, attempt: u32) -> Answer {
    let question = Question::new("Why does ice float?", "", REFERENCE, 2).at_attempt(attempt);
    Answer::new(question, text, "test", 5)
}

fn json(a: &Answer) -> Vec<u8> {
    serde_json::to_vec(a).unwrap()
}

/// Answers of every kind: good, bad, empty, Unicode, long, later attempts,
/// some carrying a best-so-far, over several references.
fn answer_values() -> Vec<Vec<u8>> {
    let references = [
        REFERENCE,
        "The heart pumps blood through the arteries to the whole body.",
        "Compound interest is interest earned on earlier interest.",
    ];
    let texts = [
        GOOD,
        BAD,
        "",
        "ice",
        "Ünïcödé ice floats ❄ — ça flotte",
        "Blood is pumped by the heart, through arteries, around the body.",
        "Interest on interest: that is what compounding means.",
        &"less dense water ice ".repeat(200),
    ];
    let mut out = Vec::new();
    for (r, reference) in references.iter().enumerate() {
        for (t, text) in texts.iter().enumerate() {
            let attempt = 1 + ((r + t) % 3) as u32;
            let q = Question::new(format!("Question {r}"), "", *reference, 1 + r as u8)
                .at_attempt(attempt);
            let mut a = Answer::new(q, *text, "test", 10 * t as u64);
            if attempt > 1 {
                // a best-so-far from an earlier attempt, as answer-score left it
                answerloop_scoring::judge(&mut a, &Default::default());
                a.question.attempt = attempt;
                a.answer = format!("{text} (again)");
                a.score = None;
                a.verdict = None;
            }
            out.push(json(&a));
        }
    }
    out
}

/// `values` as records with keys and a header, split into batches of `size`.
fn batches_of(values: &[Vec<u8>], size: usize) -> Vec<Vec<Rec>> {
    values
        .chunks(size)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, v)| Rec {
                    key: Some(format!("q-{b}-{i}").into_bytes()),
                    value: Some(v.clone()),
                    headers: vec![(b"trace".to_vec(), Some(format!("{b}/{i}").into_bytes()))],
                })
                .collect()
        })
        .collect()
}

fn score_of(bytes: &[u8]) -> Answer {
    serde_json::from_slice(bytes).expect("an answer")
}

// ----------------------------------------------------------------- tests --

#[test]
fn the_transform_scores_bit_identically_to_the_smartmodule() {
    let values = answer_values();
    let batches = batches_of(&values, 7);
    assert!(batches.len() >= 3, "several batches");
    let run = run_transform(&[OUTPUT_TOPIC], &[], &batches);
    let memory = run.memory_bytes;
    let written = run.ok();
    let expected = smartmodule(&[], &values);

    assert_eq!(written.len(), values.len(), "one output per record");
    let inputs: Vec<&Rec> = batches.iter().flatten().collect();
    for ((w, input), want) in written.iter().zip(&inputs).zip(&expected) {
        assert_eq!(w.topic, None, "scored answers go to the default output");
        assert_eq!(w.record.key, input.key, "the key passes through");
        assert_eq!(w.record.headers, input.headers, "headers pass through");
        let got = w.record.value.as_deref().expect("a value");
        assert_eq!(got, &want[..], "the very bytes the SmartModule gives");
        let (a, b) = (score_of(got), score_of(want));
        assert_eq!(
            a.score.expect("scored").to_bits(),
            b.score.expect("scored").to_bits()
        );
        assert_eq!(a.verdict, b.verdict);
        let native = answerloop_scoring::semantic::score(&a.answer, &a.question.reference);
        assert_eq!(a.score.unwrap().to_bits(), native.to_bits());
    }
    let verdicts: Vec<_> = written
        .iter()
        .map(|w| {
            score_of(w.record.value.as_deref().unwrap())
                .verdict
                .unwrap()
        })
        .collect();
    for v in [Verdict::Accept, Verdict::Regenerate, Verdict::Exhausted] {
        assert!(
            verdicts.contains(&v),
            "the batch covers {v:?}: {verdicts:?}"
        );
    }
    assert!(
        memory > 0 && memory <= MEMORY_LIMIT,
        "memory {memory} within {MEMORY_LIMIT}"
    );
    eprintln!("transform linear memory after the run: {memory} bytes");
}

#[test]
fn params_from_the_environment_change_the_outcome() {
    let values = vec![json(&answer(GOOD, 1)), json(&answer(BAD, 1))];
    let batches = batches_of(&values, 10);
    let verdicts = |env: &[(&str, &str)]| -> Vec<Verdict> {
        run_transform(&[OUTPUT_TOPIC], env, &batches)
            .ok()
            .iter()
            .map(|w| {
                score_of(w.record.value.as_deref().unwrap())
                    .verdict
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(verdicts(&[]), [Verdict::Accept, Verdict::Regenerate]);
    assert_eq!(
        verdicts(&[("THRESHOLD", "0.99")]),
        [Verdict::Regenerate, Verdict::Regenerate]
    );
    assert_eq!(
        verdicts(&[("MAX_ATTEMPTS", "1")]),
        [Verdict::Accept, Verdict::Exhausted]
    );
    assert_eq!(
        verdicts(&[("THRESHOLD", "0"), ("MAX_ATTEMPTS", "5")]),
        [Verdict::Accept, Verdict::Accept]
    );

    // And with params, still the SmartModule's bytes given the same params.
    let all = answer_values();
    let written = run_transform(
        &[OUTPUT_TOPIC],
        &[("THRESHOLD", "0.55"), ("MAX_ATTEMPTS", "2")],
        &batches_of(&all, 9),
    )
    .ok();
    let expected = smartmodule(&[("threshold", "0.55"), ("max_attempts", "2")], &all);
    let got: Vec<Vec<u8>> = written
        .into_iter()
        .map(|w| w.record.value.unwrap())
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn unusable_params_stop_the_transform_at_start_naming_them() {
    let batches = batches_of(&[json(&answer(GOOD, 1))], 1);
    for (k, v) in [("THRESHOLD", "1.5"), ("MAX_ATTEMPTS", "0")] {
        let run = run_transform(&[OUTPUT_TOPIC], &[(k, v)], &batches);
        assert!(run.failure.is_some(), "{k}={v} must not start");
        assert!(run.written.is_empty());
        assert!(
            run.stderr.contains(&format!("environment variable {k}")) && run.stderr.contains(v),
            "stderr names the param: {}",
            run.stderr
        );
    }
}

fn junk() -> Vec<Rec> {
    let mut nulls = Rec::value(Vec::new());
    nulls.value = None;
    nulls.key = Some(b"k".to_vec());
    vec![
        Rec::value(b"{not json".to_vec()),
        Rec::value(vec![0xff, 0xfe, 0x00, 0x80]),
        Rec::value(Vec::new()),
        nulls,
        Rec::value(br#"{"question": 1, "answer": []}"#.to_vec()),
        Rec::value(b"[1,2,3]".to_vec()),
        Rec::value(vec![b'x'; 100_000]),
        Rec::value(json(&answer(GOOD, 1))),
    ]
}

#[test]
fn junk_is_tagged_invalid_like_the_smartmodule_and_the_transform_goes_on() {
    let junk = junk();
    let batches = vec![junk.clone(), vec![Rec::value(json(&answer(BAD, 1)))]];
    let written = run_transform(&[OUTPUT_TOPIC], &[], &batches).ok();
    assert_eq!(written.len(), junk.len() + 1, "every record comes out");
    let values: Vec<Vec<u8>> = batches
        .iter()
        .flatten()
        .map(|r| r.value.clone().unwrap_or_default())
        .collect();
    let expected = smartmodule(&[], &values);
    for (w, want) in written.iter().zip(&expected) {
        assert_eq!(w.topic, None);
        assert_eq!(w.record.value.as_deref(), Some(&want[..]));
    }
    for w in &written[..junk.len() - 1] {
        let tag: InvalidRecord =
            serde_json::from_slice(w.record.value.as_deref().unwrap()).expect("an invalid tag");
        assert_eq!(tag.verdict, Verdict::Invalid);
    }
    assert_eq!(written[3].record.key.as_deref(), Some(&b"k"[..]));
    let last = score_of(written.last().unwrap().record.value.as_deref().unwrap());
    assert_eq!(last.verdict, Some(Verdict::Regenerate));
}

#[test]
fn with_invalid_topic_junk_goes_there_unchanged() {
    let junk = junk();
    let written = run_transform(
        &[OUTPUT_TOPIC, INVALID_TOPIC],
        &[("INVALID_TOPIC", INVALID_TOPIC)],
        std::slice::from_ref(&junk),
    )
    .ok();
    assert_eq!(written.len(), junk.len());
    for (w, input) in written.iter().zip(&junk[..junk.len() - 1]) {
        assert_eq!(w.topic.as_deref(), Some(INVALID_TOPIC));
        assert_eq!(&w.record, input, "the record unchanged");
    }
    let last = written.last().unwrap();
    assert_eq!(last.topic, None, "answers still go to the default output");
    assert_eq!(
        score_of(last.record.value.as_deref().unwrap()).verdict,
        Some(Verdict::Accept)
    );
}

#[test]
fn an_invalid_topic_that_is_not_an_output_fails_the_transform() {
    // Redpanda refuses a write to a topic the transform was not deployed
    // with; the SDK then fails the transform rather than lose the record.
    let run = run_transform(
        &[OUTPUT_TOPIC],
        &[("INVALID_TOPIC", "nowhere")],
        &[vec![Rec::value(b"junk".to_vec())]],
    );
    assert!(run.failure.is_some());
    assert!(
        run.stderr.contains("transforming record failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_host_checks_payloads_as_redpanda_does() {
    let r = Rec {
        key: Some(b"k".to_vec()),
        value: None,
        headers: vec![(b"h".to_vec(), None), (b"i".to_vec(), Some(Vec::new()))],
    };
    assert_eq!(decode_payload(&encode_payload(&r)), Some(r.clone()));
    let mut trailing = encode_payload(&r);
    trailing.push(0);
    assert_eq!(decode_payload(&trailing), None);
    assert_eq!(decode_payload(&[0x03]), None, "a key of -2 bytes");
    assert_eq!(parse_write_options(&[]), Some(None));
    let mut opts = vec![0x01];
    put_sized(&mut opts, Some(b"t"));
    assert_eq!(parse_write_options(&opts), Some(Some("t".to_string())));
    assert_eq!(parse_write_options(&[0x02]), None);
}
