// Command peers runs the workload of `eventbus bench --backend kafka` with a
// peer library instead of the bus, and prints one JSON line with the bench's
// keys, so the figures sit beside the bus's (see docs/benchmarks-peers.md).
//
//	peers --peer sarama|watermill-kafka --brokers B [--messages N --keys K
//	      --size S --partitions P --window W --rounds R
//	      --handler-latency 1ms --handler-cpu 20us]
//
// Each round: a fresh topic of --partitions partitions; the peer's consumer
// joins a new group; once the group holds every partition, the records are
// published in windows of --window (each window's acknowledgements awaited
// together) while the consumer reads; the interval runs from the first
// publish to the last record handled, as the bus's end-to-end figure does.
// Then a second group reads the filled topic from the beginning
// (`consumer_path`, first record handled to last, as the bus's bench has it).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"
)

// A peer consumes topic in group, handling each record with t, until stop
// is called; it returns once its consumer is started.
type peer func(brokers []string, topic, group string, t *tally) (stop func(), err error)

var peers = map[string]struct {
	run  peer
	mod  string // the module whose version is reported
	desc string
}{
	"sarama": {runSarama, "github.com/IBM/sarama",
		"sarama ConsumerGroup, default config but Offsets.Initial=OffsetOldest; ConsumeClaim handles its partition's records one after another (one goroutine per claimed partition) and marks each; auto-commit"},
	"watermill-kafka": {runWatermill, "github.com/ThreeDotsLabs/watermill-kafka/v3",
		"Watermill Router + watermill-kafka Subscriber (DefaultSaramaSubscriberConfig but Offsets.Initial=OffsetOldest, consumer group, DefaultMarshaler); a partition's next record waits for the previous one's Ack; auto-commit"},
}

type report struct {
	Peer           string    `json:"peer"`
	PeerVersion    string    `json:"peer_version"`
	GoVersion      string    `json:"go_version"`
	Commit         string    `json:"commit"`
	Backend        string    `json:"backend"`
	Messages       uint64    `json:"messages"`
	Keys           uint64    `json:"keys"`
	Size           int       `json:"size"`
	Partitions     int32     `json:"partitions"`
	Window         uint64    `json:"window"`
	HandlerLatency int64     `json:"handler_latency_us"`
	HandlerCPU     int64     `json:"handler_cpu_us"`
	Rounds         int       `json:"rounds"`
	MsgsPerSec     float64   `json:"msgs_per_sec"`
	PerRound       []float64 `json:"msgs_per_sec_per_round"`
	PublishPerSec  float64   `json:"publish_msgs_per_sec"`
	ConsumerPath   struct {
		MsgsPerSec float64   `json:"msgs_per_sec"`
		PerRound   []float64 `json:"msgs_per_sec_per_round"`
	} `json:"consumer_path"`
	CPUPerMsg       float64 `json:"cpu_us_per_msg"`
	P50             uint64  `json:"p50_us"`
	P99             uint64  `json:"p99_us"`
	PerKeyOrderHeld bool    `json:"per_key_order_held"`
	Consumer        string  `json:"consumer"`
	Producer        string  `json:"producer"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("peers: ")
	name := flag.String("peer", "", "sarama or watermill-kafka")
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap servers")
	commit := flag.String("commit", "unknown", "commit of the checkout, for the report")
	var w workload
	flag.Uint64Var(&w.messages, "messages", 100_000, "records per round")
	flag.Uint64Var(&w.keys, "keys", 1_000, "distinct keys")
	flag.IntVar(&w.size, "size", 256, "payload bytes (at least 24)")
	p := flag.Int("partitions", 6, "partitions of each round's topic")
	flag.Uint64Var(&w.window, "window", 10_000, "publishes in flight before their acknowledgements are awaited")
	rounds := flag.Int("rounds", 1, "measured rounds; the report gives the median rate")
	flag.DurationVar(&w.latency, "handler-latency", 0, "the handler also sleeps this long per record, e.g. 1ms")
	flag.DurationVar(&w.cpu, "handler-cpu", 0, "the handler also spins this long per record, e.g. 20us")
	flag.Parse()
	w.partitions = int32(*p)
	pe, ok := peers[*name]
	switch {
	case !ok:
		log.Fatalf("--peer must be sarama or watermill-kafka, not %q", *name)
	case flag.NArg() > 0:
		log.Fatalf("unexpected arguments: %v", flag.Args())
	case w.messages == 0 || w.keys == 0 || w.window == 0 || *p < 1 || *rounds < 1:
		log.Fatal("--messages, --keys, --window, --partitions and --rounds must be at least 1")
	case w.size < header:
		log.Fatalf("--size must be at least %d bytes (send time, key and sequence)", header)
	case w.latency < 0 || w.cpu < 0:
		log.Fatal("--handler-latency and --handler-cpu must not be negative")
	}
	addrs := strings.Split(*brokers, ",")
	run := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixMilli())

	r := report{
		Peer: *name, PeerVersion: moduleVersion(pe.mod), GoVersion: runtime.Version(), Commit: *commit,
		Backend: "kafka", Messages: w.messages, Keys: w.keys, Size: w.size, Partitions: w.partitions,
		Window: w.window, HandlerLatency: w.latency.Microseconds(), HandlerCPU: w.cpu.Microseconds(),
		Rounds: *rounds, PerKeyOrderHeld: true, Consumer: pe.desc, Producer: producerDesc,
	}
	var publish, cpu []float64
	for i := 0; i < *rounds; i++ {
		topic := fmt.Sprintf("bench-peer-%s-%s-%d", *name, run, i)
		res, err := w.round(addrs, topic, pe.run, *name == "watermill-kafka")
		if err != nil {
			log.Fatalf("round %d: %v", i, err)
		}
		cpu = append(cpu, float64(res.cpu.Microseconds())/float64(w.messages))
		rate := float64(w.messages) / res.elapsed.Seconds()
		r.PerRound = append(r.PerRound, float64(int64(rate)))
		r.ConsumerPath.PerRound = append(r.ConsumerPath.PerRound, float64(int64(float64(w.messages)/res.consumerPath.Seconds())))
		publish = append(publish, float64(w.messages)/res.publish.Seconds())
		r.PerKeyOrderHeld = r.PerKeyOrderHeld && res.ordered
		if i == 0 {
			r.P50, r.P99 = res.p50, res.p99
		}
	}
	r.MsgsPerSec = float64(int64(median(r.PerRound)))
	r.ConsumerPath.MsgsPerSec = float64(int64(median(r.ConsumerPath.PerRound)))
	r.PublishPerSec = float64(int64(median(publish)))
	r.CPUPerMsg = float64(int64(median(cpu)*100)) / 100
	out, err := json.Marshal(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
	if !r.PerKeyOrderHeld {
		log.Fatal("per-key order was violated")
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// moduleVersion is the version of mod built into this binary (go.mod pins it).
func moduleVersion(mod string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == mod {
				return d.Version
			}
		}
	}
	return "unknown"
}

// cpuTime is the user + system CPU time this process used so far.
func cpuTime() time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
