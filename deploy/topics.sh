#!/bin/sh
# Creates the topics driftwatch needs beside the sensors' own. Set KAFKA to the
# kafka-topics command of your distribution and BOOTSTRAP to the brokers.
# The repartition topic's partitions bound how many detect daemons share the work:
# make it two to four times the most you will run.
set -eu
KAFKA=${KAFKA:-kafka-topics.sh}
BOOTSTRAP=${BOOTSTRAP:-kafka-0.kafka:9092}
REPLICATION=${REPLICATION:-3}

$KAFKA --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
  --topic driftwatch-events --partitions 12 --replication-factor "$REPLICATION" \
  --config retention.ms=86400000 --config compression.type=producer
# Each service's detection state, keyed by service: compacted, as many partitions as
# driftwatch-events, and room for a service at its baseline cap.
$KAFKA --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
  --topic driftwatch-state --partitions 12 --replication-factor "$REPLICATION" \
  --config cleanup.policy=compact --config max.message.bytes=16777216
# Alerts keyed by alert id and findings keyed by finding id, read whole by every
# daemon: compacted, and deleted after the time an analyst looks back (30 days).
$KAFKA --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
  --topic driftwatch-cluster --partitions 3 --replication-factor "$REPLICATION" \
  --config cleanup.policy=compact,delete --config retention.ms=2592000000
$KAFKA --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
  --topic driftwatch-dead-letter --partitions 3 --replication-factor "$REPLICATION" \
  --config retention.ms=604800000
