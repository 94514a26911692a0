package main

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// header is the stamped prefix of every payload, as in the bus's bench:
// send time (ns since this process's epoch), key index, sequence within
// the key; little-endian u64s.
const header = 24

const producerDesc = "sarama AsyncProducer with the bus's producer settings (acks=all, idempotent, 5 ms linger; sarama's FNV-1a key hash, not murmur2)"

var epoch = time.Now()

type workload struct {
	messages, keys, window uint64
	size                   int
	partitions             int32
	latency, cpu           time.Duration
}

// record is the i-th record: key "agg-<k>" for k = i mod keys, sequence
// i div keys within it.
func (w *workload) record(i uint64) (string, []byte) {
	k := i % w.keys
	p := make([]byte, w.size)
	binary.LittleEndian.PutUint64(p[0:], uint64(time.Since(epoch)))
	binary.LittleEndian.PutUint64(p[8:], k)
	binary.LittleEndian.PutUint64(p[16:], i/w.keys)
	return fmt.Sprintf("agg-%d", k), p
}

// tally is what every handler does with a payload, as the bus's bench
// does: the work, then latency since publish, per-key order, the count.
type tally struct {
	w        *workload
	done     atomic.Uint64
	disorder atomic.Uint64
	nextSeq  []atomic.Uint64
	micros   []uint32
	first    sync.Once
	ended    chan struct{}
	// Set by the first and by the last record's handler.
	startedAt, endedAt time.Time
}

func newTally(w *workload) *tally {
	return &tally{
		w:       w,
		nextSeq: make([]atomic.Uint64, w.keys),
		micros:  make([]uint32, w.messages),
		ended:   make(chan struct{}),
	}
}

func (t *tally) handle(payload []byte) {
	t.first.Do(func() { t.startedAt = time.Now() })
	if t.w.cpu > 0 {
		for until := time.Now().Add(t.w.cpu); time.Now().Before(until); {
		}
	}
	if t.w.latency > 0 {
		time.Sleep(t.w.latency)
	}
	now := uint64(time.Since(epoch))
	sent := binary.LittleEndian.Uint64(payload[0:])
	key := binary.LittleEndian.Uint64(payload[8:])
	seq := binary.LittleEndian.Uint64(payload[16:])
	// Each key must arrive as 0, 1, 2, ...; redeliveries repeat a lower seq.
	slot := &t.nextSeq[key]
	if expect := slot.Load(); seq == expect {
		slot.Store(seq + 1)
	} else if seq > expect {
		t.disorder.Add(1)
	}
	n := t.done.Add(1)
	if n <= t.w.messages {
		t.micros[n-1] = uint32(min((now-sent)/1000, 1<<32-1))
	}
	if n == t.w.messages {
		t.endedAt = time.Now()
		close(t.ended)
	}
}

type result struct {
	// elapsed: end to end, first publish to last record handled;
	// consumerPath: a second group reading the filled topic, first record
	// handled to last.
	elapsed, publish, consumerPath time.Duration
	// CPU time of this process (producer and consumer) over the end-to-end
	// part, group join included.
	cpu      time.Duration
	p50, p99 uint64
	ordered  bool
}

// round runs one round on a fresh topic; watermillFormat says whether to
// write the records as Watermill's DefaultMarshaler does (a UUID header).
func (w *workload) round(brokers []string, topic string, run peer, watermillFormat bool) (result, error) {
	admin, err := sarama.NewClusterAdmin(brokers, sarama.NewConfig())
	if err != nil {
		return result{}, err
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: w.partitions, ReplicationFactor: 1}, false); err != nil {
		return result{}, fmt.Errorf("cannot create topic %s: %w", topic, err)
	}
	defer func() { _ = admin.DeleteTopic(topic) }()

	t := newTally(w)
	cpuBefore := cpuTime()
	stop, err := run(brokers, topic, topic+"-group", t)
	if err != nil {
		return result{}, err
	}
	// As the bus's bench does: publish once the group holds every partition.
	if err := waitAssigned(admin, topic+"-group", topic, w.partitions, time.Minute); err != nil {
		stop()
		return result{}, err
	}
	start := time.Now()
	if err := w.publish(brokers, topic, watermillFormat); err != nil {
		stop()
		return result{}, err
	}
	published := time.Since(start)
	err = t.wait()
	cpu := cpuTime() - cpuBefore
	stop()
	if err != nil {
		return result{}, err
	}
	// The consumer path, as the bus's bench measures it: a new group reads
	// the topic, filled now, from the beginning.
	again := newTally(w)
	if stop, err = run(brokers, topic, topic+"-again", again); err != nil {
		return result{}, err
	}
	err = again.wait()
	stop()
	if err != nil {
		return result{}, err
	}
	lat := t.micros
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(f float64) uint64 { return uint64(max(lat[int(f*float64(len(lat)-1))], 1)) }
	return result{
		elapsed:      t.endedAt.Sub(start),
		publish:      published,
		cpu:          cpu,
		consumerPath: again.endedAt.Sub(again.startedAt),
		p50:          q(0.5),
		p99:          q(0.99),
		ordered:      t.disorder.Load() == 0 && again.disorder.Load() == 0,
	}, nil
}

func (t *tally) wait() error {
	select {
	case <-t.ended:
		return nil
	case <-time.After(10 * time.Minute):
		return fmt.Errorf("only %d of %d records were handled within 10 minutes", t.done.Load(), t.w.messages)
	}
}

// waitAssigned waits until group is stable with every partition of topic
// assigned to a member.
func waitAssigned(admin sarama.ClusterAdmin, group, topic string, partitions int32, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		groups, err := admin.DescribeConsumerGroups([]string{group})
		if err != nil || len(groups) != 1 || groups[0].State != "Stable" {
			continue
		}
		var n int
		for _, m := range groups[0].Members {
			if a, err := m.GetMemberAssignment(); err == nil && a != nil {
				n += len(a.Topics[topic])
			}
		}
		if n == int(partitions) {
			return nil
		}
	}
	return fmt.Errorf("group %s got no full assignment within %v", group, timeout)
}

// publish sends every record in windows of w.window, each window's
// acknowledgements awaited together.
func (w *workload) publish(brokers []string, topic string, watermillFormat bool) error {
	cfg := sarama.NewConfig()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1 // sarama's condition for idempotence
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	cfg.Producer.Return.Successes = true
	p, err := sarama.NewAsyncProducer(brokers, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	var sent, acked uint64
	ack := func() error {
		select {
		case <-p.Successes():
			acked++
			return nil
		case e := <-p.Errors():
			return fmt.Errorf("publish failed: %w", e.Err)
		}
	}
	for sent < w.messages {
		to := min(sent+w.window, w.messages)
		for sent < to {
			key, payload := w.record(sent)
			m := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(key), Value: sarama.ByteEncoder(payload)}
			if watermillFormat {
				if m, err = (kafka.DefaultMarshaler{}).Marshal(topic, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
					return err
				}
				m.Key = sarama.StringEncoder(key)
			}
			// Drain acknowledgements while sending, or both sides block.
			select {
			case p.Input() <- m:
				sent++
			case <-p.Successes():
				acked++
			case e := <-p.Errors():
				return fmt.Errorf("publish failed: %w", e.Err)
			}
		}
		for acked < to {
			if err := ack(); err != nil {
				return err
			}
		}
	}
	return nil
}
