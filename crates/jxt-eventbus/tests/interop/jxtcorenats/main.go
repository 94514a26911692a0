// Command jxtcorenats reads -count messages the way jxt-core's NATS bus
// does: through its durable pull consumer `persistent-consumer-unified` on
// stream `PERSISTENT_STREAM` (no filter subject), acknowledging each. It
// prints one JSON line per message: subject, number of headers, data.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server URL")
	stream := flag.String("stream", "PERSISTENT_STREAM", "stream")
	durable := flag.String("durable", "persistent-consumer-unified", "durable consumer")
	count := flag.Int("count", 1, "messages to read")
	flag.Parse()

	nc, err := nats.Connect(*url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		log.Fatal(err)
	}
	sub, err := js.PullSubscribe("", *durable, nats.Bind(*stream, *durable))
	if err != nil {
		log.Fatal(err)
	}
	enc := json.NewEncoder(os.Stdout)
	deadline := time.Now().Add(30 * time.Second)
	for read := 0; read < *count; {
		if time.Now().After(deadline) {
			log.Fatalf("read %d of %d messages", read, *count)
		}
		msgs, err := sub.Fetch(*count-read, nats.MaxWait(2*time.Second))
		if err != nil && err != nats.ErrTimeout {
			log.Fatal(err)
		}
		for _, m := range msgs {
			line := map[string]any{"subject": m.Subject, "headers": len(m.Header), "data": string(m.Data)}
			if err := enc.Encode(line); err != nil {
				log.Fatal(err)
			}
			if err := m.Ack(); err != nil {
				log.Fatal(err)
			}
			read++
		}
	}
	fmt.Fprintln(os.Stderr, "done")
}
