from __future__ import annotations

import json
from pathlib import Path

import pytest

from uploads.events import MalformedEvent, ObjectCreated, parse_s3_event

DATA = Path(__file__).parent / "data"


def body(name: str) -> str:
    return (DATA / name).read_text()


def test_put_event_gives_one_object_created() -> None:
    assert parse_s3_event(body("s3-put-event.json")) == [
        ObjectCreated(
            bucket="test-uploads",
            key="uploads/0b5e5d3e-2f43-4a4e-9d0c-3c1f8a7b9e21.jpg",
            size=1024,
            etag="d41d8cd98f00b204e9800998ecf8427e",
            event_name="ObjectCreated:Post",
            event_time="2026-11-30T12:05:41.123Z",
        )
    ]


def test_test_event_is_ignored() -> None:
    assert parse_s3_event(body("s3-test-event.json")) == []


def test_several_records_with_encoded_and_unicode_keys() -> None:
    events = parse_s3_event(body("s3-multi-record-event.json"))

    assert [e.key for e in events] == ["uploads/my holiday photo (2).jpg", "uploads/写真 été.heic"]
    assert [e.size for e in events] == [2048, 5242880]
    # The ObjectRemoved record is not ours to handle.
    assert all(e.event_name.startswith("ObjectCreated:") for e in events)


def test_plus_in_a_key_arrives_as_percent_2b() -> None:
    message = json.loads(body("s3-put-event.json"))
    message["Records"][0]["s3"]["object"]["key"] = "uploads/a%2Bb+c.jpg"
    assert parse_s3_event(json.dumps(message))[0].key == "uploads/a+b c.jpg"


def test_sns_envelope_is_unwrapped() -> None:
    assert [e.key for e in parse_s3_event(body("sns-wrapped-event.json"))] == ["uploads/a.png"]


def test_other_event_sources_are_ignored() -> None:
    message = json.loads(body("s3-put-event.json"))
    message["Records"][0]["eventSource"] = "aws:sqs"
    assert parse_s3_event(json.dumps(message)) == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        "[]",
        "42",
        '{"hello": "world"}',
        '{"Records": "nope"}',
        '{"Records": [1]}',
        '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}',
        '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",'
        ' "s3": {"bucket": {"name": "b"}, "object": {"key": 5}}}]}',
        "[" * 100_000,  # deeper than json can read
    ],
)
def test_malformed_messages_raise_malformed_event(text: str) -> None:
    with pytest.raises(MalformedEvent):
        parse_s3_event(text)
