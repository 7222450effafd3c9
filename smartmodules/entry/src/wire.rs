//! The batch's input and output in fluvio-protocol's encoding, read and
//! written without going a byte at a time.
//!
//! Why: fluvio-protocol decodes the input's `raw_bytes` (a `Vec<u8>`) and
//! encodes each output record's value (`RecordData`) one byte at a time,
//! each byte a bounds check and a call; inside the broker every WASM
//! instruction is metered. For 2.6 KB answer records that was 46% of
//! `answer-score`'s fuel and 79% of `quality-gate`'s (`bench score`'s
//! `chain_fuel_per_record`: 936,979 before, 509,202 after). Here the
//! records are decoded from the input where it lies and values are written
//! as slices; everything else (the input's other fields, a record's header
//! and key, the error) still goes through fluvio-protocol's own code, so
//! the bytes are the same (tests compare them with fluvio-protocol's).

use std::io::{Cursor, Error, ErrorKind};

use fluvio_smartmodule::dataplane::core::{Decoder, Encoder, EncoderVarInt};
use fluvio_smartmodule::dataplane::smartmodule::{SmartModuleInput, SmartModuleOutput};
use fluvio_smartmodule::{Record, SmartModuleRecord};

/// The batch's base offset and its records, each with the base offset and
/// timestamp: what [`SmartModuleInput::try_into_smartmodule_records`] gives
/// for the same bytes, without first copying `raw_bytes` out a byte at a
/// time.
pub fn decode_input(input: &[u8], version: i16) -> Result<(i64, Vec<SmartModuleRecord>), Error> {
    let eof = |what: &str| Error::new(ErrorKind::UnexpectedEof, format!("input ends in {what}"));
    // The encoding starts with the base offset (i64) and `raw_bytes` (an
    // i32 length, nothing when it is below one, then the bytes).
    let header = input.get(..12).ok_or_else(|| eof("its header"))?;
    let len = i32::from_be_bytes(header[8..12].try_into().expect("four bytes"));
    let len = usize::try_from(len).unwrap_or(0);
    let raw = input.get(12..12 + len).ok_or_else(|| eof("its records"))?;
    // The fields after `raw_bytes` depend on the version: fluvio-protocol
    // reads them, from the same bytes with `raw_bytes` left empty.
    let mut rest = Vec::with_capacity(input.len() - raw.len());
    rest.extend_from_slice(&header[..8]);
    rest.extend_from_slice(&0i32.to_be_bytes());
    rest.extend_from_slice(&input[12 + len..]);
    let fields = SmartModuleInput::decode_from(&mut Cursor::new(rest), version)?;
    let mut records: Vec<Record> = Vec::new();
    records.decode(&mut Cursor::new(raw), version)?;
    let (offset, timestamp) = (fields.base_offset(), fields.base_timestamp());
    let records = records
        .into_iter()
        .map(|record| SmartModuleRecord::new(record, offset, timestamp))
        .collect();
    Ok((offset, records))
}

/// `output` encoded as fluvio-protocol encodes it, each record's value
/// written as one slice.
pub fn encode_output(output: &SmartModuleOutput, version: i16) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(8 + encoded_size(&output.successes));
    encode_records(&output.successes, &mut out, version)?;
    output.error.encode(&mut out, version)?;
    Ok(out)
}

/// `records` appended to `out` as fluvio-protocol encodes a `Vec<Record>`
/// (its length, then each record), each value written as one slice: also
/// what the broker puts into a chain's input (`SmartModuleInput::new`).
pub fn encode_records(records: &[Record], out: &mut Vec<u8>, version: i16) -> Result<(), Error> {
    (records.len() as i32).encode(out, version)?;
    let mut head = Vec::new();
    for record in records {
        encode_record(record, &mut head, out, version)?;
    }
    Ok(())
}

/// About what `records` take encoded: room to reserve.
pub fn encoded_size(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| r.value.len() + r.key.as_ref().map_or(0, |k| k.len()) + 24)
        .sum()
}

/// One record as `Record::encode` writes it: its length as a varint, then
/// its header, key, value and header count. `head` is a buffer to reuse.
fn encode_record(
    record: &Record,
    head: &mut Vec<u8>,
    out: &mut Vec<u8>,
    version: i16,
) -> Result<(), Error> {
    head.clear();
    record.preamble.encode(head, version)?;
    record.key.encode(head, version)?;
    let value: &[u8] = record.value.as_ref();
    let value_len = value.len() as i64;
    let body =
        head.len() + value_len.var_write_size() + value.len() + record.headers.var_write_size();
    (body as i64).encode_varint(out)?;
    out.extend_from_slice(head);
    value_len.encode_varint(out)?;
    out.extend_from_slice(value);
    record.headers.encode_varint(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use fluvio_smartmodule::dataplane::smartmodule::{
        SmartModuleKind, SmartModuleTransformRuntimeError,
    };
    use fluvio_smartmodule::RecordData;

    use super::*;

    /// Records with and without keys, values from empty to past a
    /// three-byte varint length, and a record header that is not the
    /// default (offset and timestamp deltas, header count).
    fn records() -> Vec<Record> {
        let mut records = vec![
            Record::new(RecordData::from(Vec::<u8>::new())),
            Record::new_key_value("k", "v"),
            Record::new_key_value(Vec::<u8>::new(), vec![7u8; 300]),
            Record::new(RecordData::from(vec![b'x'; 20_000])),
            Record::new(RecordData::from("{\"answer\":\"é\"}")),
        ];
        let mut moved = Record::new_key_value("key", vec![1u8; 130]);
        moved.preamble.set_offset_delta(70_000);
        moved.preamble.set_timestamp_delta(-5);
        moved.headers = 3;
        records.push(moved);
        records
    }

    #[test]
    fn the_input_decodes_as_fluvio_protocol_decodes_it() {
        for version in [11, 16, 20, 21, 22, 23, 25] {
            for records in [records(), Vec::new()] {
                let mut input = SmartModuleInput::try_from_records(records, version).unwrap();
                input.set_base_offset(1234);
                input.set_base_timestamp(98_765);
                let mut bytes = Vec::new();
                input.encode(&mut bytes, version).unwrap();
                let (offset, ours) = decode_input(&bytes, version).unwrap();
                let theirs =
                    SmartModuleInput::decode_from(&mut Cursor::new(&bytes), version).unwrap();
                assert_eq!(offset, theirs.base_offset());
                let theirs = theirs.try_into_smartmodule_records(version).unwrap();
                assert_eq!(
                    format!("{ours:?}"),
                    format!("{theirs:?}"),
                    "version {version}"
                );
            }
        }
    }

    #[test]
    fn a_truncated_input_is_an_error_not_a_panic() {
        let input = SmartModuleInput::try_from_records(records(), 21).unwrap();
        let mut bytes = Vec::new();
        input.encode(&mut bytes, 21).unwrap();
        for end in [0, 5, 11, 12, 40, bytes.len() - 1] {
            assert!(decode_input(&bytes[..end], 21).is_err(), "cut at {end}");
        }
    }

    #[test]
    fn records_encode_as_a_chain_input_encodes_them() {
        for version in [11, 21, 25] {
            let theirs = SmartModuleInput::try_from_records(records(), version).unwrap();
            let mut ours = Vec::new();
            encode_records(&records(), &mut ours, version).unwrap();
            assert_eq!(ours, theirs.raw_bytes());
        }
    }

    #[test]
    fn the_output_encodes_as_fluvio_protocol_encodes_it() {
        let failed = SmartModuleTransformRuntimeError::new(
            &Record::new("bad"),
            7,
            SmartModuleKind::Map,
            fluvio_smartmodule::eyre!("no"),
        );
        for version in [11, 21, 22, 25] {
            for error in [None, Some(failed.clone())] {
                let output = SmartModuleOutput {
                    successes: records(),
                    error,
                };
                let mut theirs = Vec::new();
                output.encode(&mut theirs, version).unwrap();
                assert_eq!(encode_output(&output, version).unwrap(), theirs);
            }
        }
    }
}
