// Command saramahash produces one record per key read from stdin (one key a
// line) to -topic with sarama's hash partitioner, as jxt-core's producer
// does, and prints the partition each record was stored in, one a line, in
// input order. The interop tests compare it with the Rust producer.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap servers")
	topic := flag.String("topic", "", "topic to produce to")
	flag.Parse()
	if *topic == "" {
		log.Fatal("-topic is required")
	}

	var msgs []*sarama.ProducerMessage
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic: *topic,
			Key:   sarama.StringEncoder(in.Text()),
			Value: sarama.StringEncoder("sarama"),
		})
	}
	if err := in.Err(); err != nil {
		log.Fatal(err)
	}

	cfg := sarama.NewConfig()
	cfg.ClientID = "jxt-eventbus-interop"
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	cfg.Producer.RequiredAcks = sarama.WaitForLocal
	cfg.Producer.Return.Successes = true
	// A topic the test just created may not have a leader for every
	// partition yet.
	cfg.Producer.Retry.Max = 20
	cfg.Producer.Retry.Backoff = 250 * time.Millisecond
	producer, err := sarama.NewSyncProducer(strings.Split(*brokers, ","), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()
	if err := producer.SendMessages(msgs); err != nil {
		if errs, ok := err.(sarama.ProducerErrors); ok && len(errs) > 0 {
			log.Fatalf("%v; first: %v", err, errs[0].Err)
		}
		log.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, m := range msgs {
		fmt.Fprintln(out, m.Partition)
	}
}
