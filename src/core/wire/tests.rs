//! The wire format, end to end: every message kind through the frame decoder, split anywhere, and
//! every kind of broken input an error of that stream only.

use super::message::*;
use super::*;
use crate::core::record::{Code, ErrorRecord, ExceptionRecord};

fn sample() -> Vec<Message> {
    vec![
        Message::Error(ErrorRecord {
            level: 2,
            message: "Undefined variable $x".into(),
            file: "/app/job.php".into(),
            line: 12,
            trace: vec!["#0 /app/job.php(3): run()".into()],
        }),
        Message::Value {
            format: 0,
            bytes: b"i:42;".to_vec(),
        },
        Message::Exception(ExceptionRecord {
            class: "RuntimeException".into(),
            message: "outer".into(),
            code: Code::Int(7),
            file: "/a.php".into(),
            line: 3,
            trace: "#0 {main}".into(),
            previous: Some(Box::new(ExceptionRecord {
                class: "LogicException".into(),
                message: "inner".into(),
                code: Code::Int(0),
                file: "/b.php".into(),
                line: 9,
                trace: String::new(),
                previous: None,
            })),
        }),
        Message::Exit(3),
        Message::Fatal,
        Message::Stats {
            peak_memory: 2 << 20,
            finished_ns: 123_456_789,
        },
        Message::Task {
            id: 7,
            format: 1,
            bytes: b"payload".to_vec(),
        },
        Message::Stop,
        Message::Ready,
        Message::TaskEnd {
            id: 7,
            cpu_ns: 5,
            rss: 6,
        },
    ]
}

fn stream(msgs: &[Message]) -> Vec<u8> {
    msgs.iter().flat_map(|m| m.encode()).collect()
}

#[test]
fn every_message_kind_survives_a_round_trip() {
    let msgs = sample();
    let mut d = FrameDecoder::new(1 << 20);
    let mut out = Vec::new();
    d.push(&stream(&msgs), &mut out).unwrap();
    d.finish().unwrap();
    assert_eq!(out, msgs);
}

#[test]
fn frames_split_at_every_byte_boundary_are_reassembled() {
    let msgs = sample();
    let bytes = stream(&msgs);
    for chunk in 1..8 {
        let mut d = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            d.push(piece, &mut out).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(out, msgs, "chunk size {chunk}");
    }
}

#[test]
fn long_records_are_shrunk_to_fit_the_frame_limit_not_dropped() {
    let long = "é".repeat(5000);
    let error = Message::Error(ErrorRecord {
        level: 2,
        message: long.clone(),
        file: "/f.php".into(),
        line: 1,
        trace: vec![long.clone(); 10],
    });
    let fitted = error.fit(2048);
    assert!(fitted.encode().len() <= 2048);
    let Message::Error(r) = fitted else {
        panic!("still an error record")
    };
    assert!(
        r.message.starts_with("éé") && r.message.ends_with("bytes cut)"),
        "{}",
        r.message
    );
    assert_eq!(r.file, "/f.php");

    let mut e = ExceptionRecord {
        class: "E".into(),
        message: long.clone(),
        trace: long.clone(),
        ..Default::default()
    };
    e.previous = Some(Box::new(e.clone()));
    let fitted = Message::Exception(e).fit(2048);
    assert!(fitted.encode().len() <= 2048);

    let small = Message::Exit(3);
    assert_eq!(small.clone().fit(2048), small);
}

#[test]
fn oversized_frame_is_refused_before_its_body_arrives() {
    let mut d = FrameDecoder::new(64);
    let mut out = Vec::new();
    let err = d.push(&1000u32.to_le_bytes(), &mut out).unwrap_err();
    assert!(
        err.to_string()
            .contains("forklift.max_frame_size is 64 bytes"),
        "{err}"
    );
    // Everything after is ignored, and the failure is remembered.
    d.push(&stream(&sample()), &mut out).unwrap();
    assert!(out.is_empty());
    assert!(d.failed().is_some());
}

#[test]
fn a_value_or_task_of_exactly_the_limit_passes_and_a_frame_past_its_envelope_does_not() {
    // Senders refuse a value over the limit by its own size; the decoder is the backstop.
    for (len, ok) in [(4096, true), (4096 + ENVELOPE, false)] {
        let frame = Message::Value {
            format: 1,
            bytes: vec![7; len],
        }
        .encode();
        let mut d = FrameDecoder::new(4096);
        let mut out = Vec::new();
        assert_eq!(d.push(&frame, &mut out).is_ok(), ok, "{len} bytes");
        // Task frames carry the most besides the value.
        let task = Message::Task {
            id: u64::MAX,
            format: 1,
            bytes: vec![7; len],
        }
        .encode();
        let mut d = FrameDecoder::new(4096);
        assert_eq!(d.push(&task, &mut out).is_ok(), ok, "task of {len} bytes");
    }
}

#[test]
fn truncated_stream_is_an_error_at_finish() {
    let bytes = Message::Exit(1).encode();
    let mut d = FrameDecoder::new(1 << 20);
    let mut out = Vec::new();
    d.push(&bytes[..bytes.len() - 2], &mut out).unwrap();
    assert!(out.is_empty());
    let err = d.finish().unwrap_err();
    assert!(err.to_string().contains("ended inside a frame"), "{err}");
}

#[test]
fn unknown_kind_and_short_payloads_are_channel_errors() {
    let mut out = Vec::new();
    let mut d = FrameDecoder::new(1 << 20);
    let err = d.push(&[1, 0, 0, 0, 99], &mut out).unwrap_err();
    assert!(err.to_string().contains("unknown frame kind 99"), "{err}");

    let mut d = FrameDecoder::new(1 << 20);
    let err = d
        .push(&[3, 0, 0, 0, KIND_EXIT, 1, 2], &mut out)
        .unwrap_err();
    assert!(
        err.to_string().contains("shorter than its contents"),
        "{err}"
    );

    let mut d = FrameDecoder::new(1 << 20);
    let err = d.push(&[0, 0, 0, 0], &mut out).unwrap_err();
    assert!(err.to_string().contains("empty frame"), "{err}");
}

/// Deterministic garbage: no input may panic the decoder, and valid frames before the garbage
/// are still delivered.
#[test]
fn garbage_never_panics_and_keeps_the_frames_before_it() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let good = stream(&sample());
    for round in 0..2000 {
        let mut bytes = good.clone();
        let n = (round % 64) + 1;
        for _ in 0..n {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        let mut d = FrameDecoder::new(4096);
        let mut out = Vec::new();
        let _ = d.push(&bytes, &mut out);
        let _ = d.finish();
        assert!(out.len() >= sample().len(), "round {round}");
        assert_eq!(&out[..sample().len()], &sample()[..]);
    }
}
