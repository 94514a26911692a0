package main

import (
	"context"
	"log"
	"sync"

	"github.com/IBM/sarama"
)

// runSarama consumes with a sarama consumer group as its documentation
// shows: ConsumeClaim loops over its partition's records, handling each and
// marking it. Sarama runs one ConsumeClaim goroutine per claimed partition,
// so a partition's records are handled one after another.
func runSarama(brokers []string, topic, group string, t *tally) (func(), error) {
	cfg := sarama.NewConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	g, err := sarama.NewConsumerGroup(brokers, group, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Consume returns at each rebalance; join again until stopped.
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, handler{t}); err != nil && ctx.Err() == nil {
				log.Fatalf("sarama consumer group: %v", err)
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		_ = g.Close()
	}, nil
}

type handler struct{ t *tally }

func (handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.t.handle(m.Value)
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}
