#!/usr/bin/env python3
"""Sorts perf samples into parts of the data path and prints a Markdown table.

    perf_parts.py NAME=CPU_US_PER_RECORD=STACKS_FILE...

Each STACKS_FILE is `perf script -F comm,tid,ip,sym` output with call
graphs. A sample belongs to the first part whose pattern matches one of
its frames, read from the leaf towards the root, so a part names the
innermost piece of the data path the CPU was spent in. A part's share of
the samples times the side's CPU per record gives microseconds per record.
Samples whose stack was cut short before reaching a known frame count as
"unattributed (stack cut short)".
"""
import collections
import re
import sys

PARTS = [
    ("handler (the benchmark's own work)", r"bench::Tally::(record|handle)"),
    ("messages built by the benchmark",
     r"bench::memory::message|publish_windows::\{closure#0\}::\{closure#0\}|bench::payload|bench::key_of|Uuid::now_v7"),
    ("publish: delivery reports",
     r"handle_delivery_report_event|DeliveryFuture|kafka::reports::|join_all|PublishesInFlight"),
    ("publish: hand to the client",
     r"EventBus::publish|KafkaProducer::enqueue|FutureProducer.*send_result|rd_kafka_producev|MemoryProducer|MemoryBroker::publish"),
    ("librdkafka: produce requests",
     r"rd_kafka_broker_producer_serve|rd_kafka_toppar_producer_serve|ProduceRequest|rd_kafka_handle_Produce|rd_kafka_msgset_writer"),
    ("librdkafka: fetch responses", r"rd_kafka_broker_consumer_serve|rd_kafka_fetch_reply_handle|rd_kafka_msgset_reader"),
    ("librdkafka: other threads", r"rd_kafka_broker_thread_main|rd_kafka_thread_main"),
    ("dispatcher: commit positions", r"Dispatcher::store_advanced|dispatch::store_position"),
    ("dispatcher: completions", r"Dispatcher::on_completion"),
    ("dispatcher: queue records", r"Dispatcher::on_records|Dispatcher::on_event"),
    ("dispatcher: start lanes", r"Dispatcher::schedule"),
    ("dispatcher: other", r"Dispatcher::run"),
    ("lane workers", r"dispatch::worker::|dispatch::batch_worker::"),
    ("consume: poll and copy out",
     r"kafka::poll_loop|kafka::mapping::record|bench::kafka::PollLoop|memory::consumer"),
    ("keyed-by-hand workers", r"bench::kafka::spawn_keyed"),
    ("commits", r"kafka::commits|rd_kafka_commit"),
    ("tokio scheduler", r"tokio::runtime"),
]
CUT = "unattributed (stack cut short)"


def shares(path):
    counts, total, frames = collections.Counter(), 0, []

    def sample():
        nonlocal total
        if not frames:
            return
        total += 1
        for part, pattern in PARTS:
            if any(pattern.search(f) for f in frames):
                counts[part] += 1
                return
        counts[CUT] += 1

    compiled = [(p, re.compile(rx)) for p, rx in PARTS]
    PARTS[:] = compiled
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                sample()
                frames = []
            elif line[0] in " \t":
                frames.append(line.strip())
    sample()
    PARTS[:] = [(p, rx.pattern) for p, rx in compiled]
    return {part: n / total for part, n in counts.items()}, total


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    sides = []
    for arg in argv:
        name, cpu, path = arg.split("=", 2)
        share, total = shares(path)
        sides.append((name, float(cpu), share, total))
    order = [p for p, _ in PARTS] + [CUT]
    print("| part | " + " | ".join(f"{n} µs/record" for n, *_ in sides) + " |")
    print("|---|" + "---:|" * len(sides))
    for part in order:
        if all(s[2].get(part, 0) < 0.005 for s in sides):
            continue
        cells = [f"{s[2].get(part, 0) * s[1]:.2f}" for s in sides]
        print(f"| {part} | " + " | ".join(cells) + " |")
    print("| **all** | " + " | ".join(f"**{s[1]:.2f}**" for s in sides) + " |")
    print("| samples | " + " | ".join(str(s[3]) for s in sides) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
