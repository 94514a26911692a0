// Command watermill publishes with, or subscribes with, Watermill's Kafka
// publisher and subscriber (watermill-kafka v3, DefaultMarshaler: the UUID in
// the `_watermill_message_uuid` header, metadata as the other headers).
//
//	watermill -mode publish -brokers B -topic T < lines
//	watermill -mode subscribe -brokers B -topic T -group G -count N > lines
//
// A line is a JSON object {"uuid", "payload", "metadata"}.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"log"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

type line struct {
	UUID     string            `json:"uuid"`
	Payload  string            `json:"payload"`
	Metadata map[string]string `json:"metadata"`
}

func main() {
	mode := flag.String("mode", "", "publish or subscribe")
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap servers")
	topic := flag.String("topic", "", "topic")
	group := flag.String("group", "", "consumer group (subscribe)")
	count := flag.Int("count", 1, "messages to read (subscribe)")
	flag.Parse()
	addrs := strings.Split(*brokers, ",")
	logger := watermill.NopLogger{}

	switch *mode {
	case "publish":
		pub, err := kafka.NewPublisher(kafka.PublisherConfig{
			Brokers:   addrs,
			Marshaler: kafka.DefaultMarshaler{},
		}, logger)
		if err != nil {
			log.Fatal(err)
		}
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			var l line
			if err := json.Unmarshal(in.Bytes(), &l); err != nil {
				log.Fatal(err)
			}
			msg := message.NewMessage(l.UUID, []byte(l.Payload))
			for k, v := range l.Metadata {
				msg.Metadata.Set(k, v)
			}
			if err := pub.Publish(*topic, msg); err != nil {
				log.Fatal(err)
			}
		}
		if err := pub.Close(); err != nil {
			log.Fatal(err)
		}
	case "subscribe":
		cfg := kafka.DefaultSaramaSubscriberConfig()
		cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			Brokers:               addrs,
			Unmarshaler:           kafka.DefaultMarshaler{},
			OverwriteSaramaConfig: cfg,
			ConsumerGroup:         *group,
		}, logger)
		if err != nil {
			log.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		msgs, err := sub.Subscribe(ctx, *topic)
		if err != nil {
			log.Fatal(err)
		}
		enc := json.NewEncoder(os.Stdout)
		for i := 0; i < *count; i++ {
			msg, ok := <-msgs
			if !ok {
				log.Fatalf("read %d of %d messages", i, *count)
			}
			l := line{UUID: msg.UUID, Payload: string(msg.Payload), Metadata: map[string]string(msg.Metadata)}
			if err := enc.Encode(l); err != nil {
				log.Fatal(err)
			}
			msg.Ack()
		}
		_ = sub.Close()
	default:
		log.Fatal("-mode must be publish or subscribe")
	}
}
