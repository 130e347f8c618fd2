//! Attacks against the real binary, as a viewer or a Kafka producer would run them:
//! hostile SQL over HTTP and the PostgreSQL wire, a record built to break its dead
//! letter, a dead-letter topic that refuses everything, topics compressed with every
//! codec Kafka producers use, and a batch that cannot be decompressed. After each, the
//! daemon is up, answers `/healthz` and keeps ingesting. The daemon runs under an address-space limit, so a runaway
//! allocation ends it rather than the machine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaRespErr;

use crate::common::{
    Killed, binary, cluster, eventually, fixtures, free_port, http_get, require_program, sample,
};

/// The daemon's address-space limit: far above what it needs, far below the machine.
const ADDRESS_SPACE: &str = "--as=8589934592";

fn falco_line() -> String {
    let text = std::fs::read_to_string(fixtures().join("mixed.jsonl")).unwrap();
    text.lines().next().unwrap().to_owned()
}

/// Publishes records with the given producer settings and waits for the broker.
fn produce_with(brokers: &str, topic: &str, settings: &[(&str, &str)], records: &[Vec<u8>]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in settings {
        cc.set(*k, *v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = cc.create().unwrap();
    for r in records {
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(r))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// `driftwatch run` under the address-space limit with this configuration.
fn start(dir: &Path, config: &str) -> Killed {
    let path = dir.join("driftwatch.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(require_program("prlimit"))
        .arg(ADDRESS_SPACE)
        .arg("--")
        .arg(binary())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    Killed(child)
}

fn metric(addr: &str, name_and_labels: &str) -> f64 {
    let body = http_get(addr, "/metrics").unwrap_or_default();
    sample(&body, name_and_labels).unwrap_or(0.0)
}

async fn decoded(addr: &str, n: f64) {
    eventually(
        Duration::from_secs(60),
        &format!("{n} falco events decoded"),
        || metric(addr, r#"driftwatch_events_decoded_total{source="falco"}"#) >= n,
    )
    .await;
}

async fn post_sql(client: &reqwest::Client, addr: &str, sql: &str) -> (u16, String) {
    let r = client
        .post(format!("http://{addr}/api/v1/sql"))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_and_records_leave_the_daemon_up_and_ingesting() {
    let (cluster, brokers) = cluster("falco", 3);
    // The dead-letter topic refuses every letter, as a missing topic would.
    cluster
        .topic_error(
            "driftwatch-dead-letter",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (http, pg) = (free_port(), free_port());
    let _daemon = start(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"attacks\"\n\
             [[kafka.topics]]\nname = \"falco\"\nformat = \"falco\"\n\
             [kafka.properties]\n\"message.timeout.ms\" = \"2000\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[postgres]\nlisten = \"127.0.0.1:{pg}\"\n\
             [sql]\ntimeout = \"2s\"\n[state]\ndata-dir = {data:?}\n"
        ),
    );
    let addr = format!("127.0.0.1:{http}");
    let line = falco_line().into_bytes();
    let big_producer = [
        ("message.max.bytes", "2000000"),
        ("compression.type", "lz4"),
    ];
    produce_with(&brokers, "falco", &big_producer, &vec![line.clone(); 30]);
    decoded(&addr, 30.0).await;

    // A record just under the record cap, of bytes that grow most as a letter.
    let hostile = vec![0x01u8; 1024 * 1024 - 1];
    produce_with(&brokers, "falco", &big_producer, &[hostile]);
    produce_with(&brokers, "falco", &big_producer, &vec![line.clone(); 30]);
    decoded(&addr, 60.0).await;
    eventually(
        Duration::from_secs(60),
        "the refused letter in the spool",
        || metric(&addr, "driftwatch_dead_letters_spooled_total") >= 1.0,
    )
    .await;
    let spool = std::fs::read_to_string(data.join("dead-letters.spool.jsonl")).unwrap();
    let letter: serde_json::Value = serde_json::from_str(spool.lines().next().unwrap()).unwrap();
    assert_eq!(letter["payload_bytes"], 1024 * 1024 - 1);
    assert_eq!(letter["payload_sha256"].as_str().unwrap().len(), 64);

    // SQL that would allocate terabytes, or run forever.
    let client = reqwest::Client::new();
    let (status, body) = post_sql(
        &client,
        &addr,
        "SELECT length(repeat(arrow_cast('x','LargeUtf8'), 100000000000))",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("SQL limit"), "{body}");
    let started = Instant::now();
    let (status, body) = post_sql(
        &client,
        &addr,
        "SELECT count(*) FROM generate_series(1, 1000000000000000)",
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // Over the wire: a quoted engine setting, then what every other session sees.
    let psql = |sql: &str| {
        let out = Command::new(require_program("psql"))
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &pg.to_string()])
            .args(["-U", "driftwatch", "-d", "driftwatch", "-c", sql])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let setting = "SELECT value FROM information_schema.df_settings \
                   WHERE name = 'datafusion.execution.batch_size'";
    let (ok, before, err) = psql(setting);
    assert!(ok, "{err}");
    for attack in [
        "SET \"datafusion.runtime.memory_limit\" = '1K'",
        "SET \"datafusion.execution.batch_size\" = 1",
        "SET timezone = 'Europe/Paris'",
    ] {
        let (ok, _, err) = psql(attack);
        assert!(!ok && err.contains("read-only"), "{attack}: {err}");
    }
    let (ok, after, err) = psql(setting);
    assert!(ok, "{err}");
    assert_eq!(before, after);
    let (ok, _, err) = psql("SELECT count(*) FROM generate_series(1, 1000000000000000)");
    assert!(!ok && err.contains("time limit"), "{err}");

    // Still up, still ingesting, and every refusal counted.
    assert_eq!(http_get(&addr, "/healthz").unwrap(), "ok\n");
    produce_with(&brokers, "falco", &big_producer, &vec![line; 10]);
    decoded(&addr, 70.0).await;
    for outcome in ["too_large", "timeout"] {
        let labels =
            format!(r#"driftwatch_sql_queries_total{{interface="http",outcome="{outcome}"}}"#);
        assert!(metric(&addr, &labels) >= 1.0, "{labels}");
    }
}

/// Producers compress with whatever their client defaults to; kcat is one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_compressed_with_every_kafka_codec_are_consumed() {
    let codecs = ["zstd", "lz4", "snappy", "gzip"];
    let (cluster, brokers) = cluster("plain", 1);
    for codec in codecs {
        cluster.create_topic(codec, 2, 1).unwrap();
    }
    let line = falco_line();
    for codec in codecs {
        let mut kcat = Command::new(require_program("kcat"))
            .args(["-P", "-b", &brokers, "-t", codec, "-z", codec])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = kcat.stdin.take().unwrap();
            for _ in 0..25 {
                writeln!(stdin, "{line}").unwrap();
            }
        }
        assert!(kcat.wait().unwrap().success(), "kcat -z {codec}");
    }
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let topics: String = codecs
        .iter()
        .map(|c| format!("[[kafka.topics]]\nname = \"{c}\"\nformat = \"falco\"\n"))
        .collect();
    let _daemon = start(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"codecs\"\n{topics}\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[postgres]\nenabled = false\n"
        ),
    );
    let addr = format!("127.0.0.1:{http}");
    decoded(&addr, 100.0).await;
    for codec in codecs {
        let labels =
            format!(r#"driftwatch_records_consumed_total{{topic="{codec}",format="falco"}}"#);
        assert_eq!(metric(&addr, &labels), 25.0, "{codec}");
    }
}

/// A distinctive secret in every secret-bearing key and in every sink URL; after
/// deliveries have failed against them, no output surface repeats any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_surface_repeats_a_secret() {
    let (_cluster, brokers) = cluster("falco", 1);
    let dir = tempfile::tempdir().unwrap();
    let (http, pg) = (free_port(), free_port());
    // Nothing listens there: every delivery fails, with an error naming the endpoint.
    let closed = free_port();
    let secrets = [
        "S3cretSlackPath",
        "S3cretQueryToken",
        "S3cretUserPass",
        "S3cretRoutingKey",
        "S3cretPgPassword",
        "S3cretReportPass",
        "S3cretAlertmanagerPath",
    ];
    let outbox = dir.path().join("outbox");
    let reports = dir.path().join("reports");
    let config = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"secrets\"\n\
         [[kafka.topics]]\nname = \"falco\"\nformat = \"auto\"\n\
         [detect]\nlearning-period = \"1ms\"\nmin-learning-events = 1\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n\
         [postgres]\nlisten = \"127.0.0.1:{pg}\"\n\
         [[postgres.users]]\nname = \"analyst\"\npassword = \"{pgpass}\"\n\
         [reports]\ndir = {reports:?}\n\
         [[reports.schedule]]\nname = \"minutely\"\ncron = \"* * * * *\"\nformats = [\"json\"]\n\
         webhook = \"http://reporter:{reportpass}@127.0.0.1:{closed}/r\"\n\
         [notify]\noutbox-dir = {outbox:?}\n\
         [notify.retry]\ninitial = \"100ms\"\nmax = \"200ms\"\n\
         [[notify.sink]]\nname = \"slack\"\ntype = \"slack\"\nurl = \"http://127.0.0.1:{closed}/services/T0/B0/{slack}\"\n\
         [[notify.sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://user:{userpass}@127.0.0.1:{closed}/in?token={query}\"\n\
         [[notify.sink]]\nname = \"pd\"\ntype = \"pagerduty\"\nurl = \"http://127.0.0.1:{closed}/v2/enqueue\"\nrouting-key = \"{routing}\"\n\
         [[notify.sink]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:{closed}/{am}\"\n\
         [[notify.route]]\nname = \"all-slack\"\nsink = \"slack\"\n\
         [[notify.route]]\nname = \"all-hook\"\nsink = \"hook\"\n\
         [[notify.route]]\nname = \"all-pd\"\nsink = \"pd\"\n\
         [[notify.route]]\nname = \"all-am\"\nsink = \"am\"\n",
        slack = secrets[0],
        query = secrets[1],
        userpass = secrets[2],
        routing = secrets[3],
        pgpass = secrets[4],
        reportpass = secrets[5],
        am = secrets[6],
    );
    let _daemon = start(dir.path(), &config);
    let addr = format!("127.0.0.1:{http}");
    // Learning ends at once, so the workload's next acts raise alerts to deliver.
    let workload = std::fs::read_to_string(fixtures().join("mixed.jsonl")).unwrap();
    let records: Vec<Vec<u8>> = workload.lines().map(|l| l.as_bytes().to_vec()).collect();
    produce_with(&brokers, "falco", &[], &records);
    decoded(&addr, 1.0).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let client = client.clone();
        let url = format!("http://{addr}{path}");
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = http_get(&addr, "/api/v1/notifications").unwrap_or_default();
        let failed = ["slack", "hook", "pd", "am"].iter().all(|sink| {
            body.contains(&format!("\"sink\":\"{sink}\"")) && body.contains("last_error")
        });
        if failed && body.contains("127.0.0.1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed delivery to every sink: {body}\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut surfaces = vec![
        ("/metrics", get("/metrics").await),
        ("/api/v1/notifications", get("/api/v1/notifications").await),
        ("/api/v1/config", get("/api/v1/config").await),
        ("/api/v1/audit", get("/api/v1/audit").await),
        ("/api/v1/alerts", get("/api/v1/alerts").await),
    ];
    let sql = client
        .post(format!("http://{addr}/api/v1/sql"))
        .json(&serde_json::json!({ "sql": "SELECT * FROM notifications" }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sql.contains("last_error"), "{sql}");
    surfaces.push(("SELECT * FROM notifications", sql));
    // Give the report webhook its attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    surfaces.push((
        "the daemon's log",
        std::fs::read_to_string(dir.path().join("daemon.log")).unwrap(),
    ));
    for (what, text) in &surfaces {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
    }
}

/// Clients that open connections and never finish a request (slowloris) hold at most
/// `max-connections` descriptors, each for at most `header-timeout`; `/healthz` still
/// answers, and an oversized body is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_cannot_exhaust_the_daemon() {
    use std::io::{Read, Write};
    let (_cluster, brokers) = cluster("falco", 1);
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let daemon = start(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\n[[kafka.topics]]\nname = \"falco\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\nmax-connections = 16\nheader-timeout = \"1s\"\n\
             max-body-bytes = \"1MiB\"\n[postgres]\nenabled = false\n"
        ),
    );
    let addr = format!("127.0.0.1:{http}");
    eventually(Duration::from_secs(30), "the daemon to listen", || {
        http_get(&addr, "/healthz").is_ok_and(|b| b == "ok\n")
    })
    .await;
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", daemon.0.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = fds();
    let mut hanging = Vec::new();
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        hanging.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = fds();
    // 16 connections, and a few of librdkafka's, which come and go; far from 200.
    assert!(
        during <= before + 16 + 8,
        "{before} descriptors before, {during} during"
    );
    // Every half-sent request is closed by the server in time, and health is answered.
    eventually(
        Duration::from_secs(30),
        "/healthz beside 200 half-sent requests",
        || http_get(&addr, "/healthz").is_ok_and(|b| b == "ok\n"),
    )
    .await;
    let mut first = hanging.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let read = first.read_to_end(&mut buf);
    assert!(
        read.is_ok(),
        "the server did not close a half-sent request: {read:?}"
    );
    drop(hanging);

    // A body over the limit, on a route whose handler would read it.
    let big = "x".repeat(2 << 20);
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/sql"))
        .json(&serde_json::json!({ "sql": big }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(http_get(&addr, "/healthz").unwrap(), "ok\n");
}

/// A producer inventing service keys: the daemon
/// caps what it tracks, says so once, and keeps judging the services it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sprayed_service_keys_hit_the_cap_with_one_alert() {
    let (_cluster, brokers) = cluster("falco", 2);
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let _daemon = start(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"spray\"\n\
             [[kafka.topics]]\nname = \"falco\"\nformat = \"falco\"\n\
             [detect]\nmax-services = 20\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[postgres]\nenabled = false\n"
        ),
    );
    let addr = format!("127.0.0.1:{http}");
    let line = falco_line();
    let sprayed: Vec<Vec<u8>> = (0..500)
        .map(|i| {
            line.replace(
                "\"k8s.ns.name\":\"shop\"",
                &format!("\"k8s.ns.name\":\"spray{i}\""),
            )
            .into_bytes()
        })
        .collect();
    assert_ne!(sprayed[0], line.as_bytes());
    produce_with(&brokers, "falco", &[], &sprayed);
    decoded(&addr, 500.0).await;
    eventually(
        Duration::from_secs(30),
        "the refused events counted",
        || {
            metric(
                &addr,
                r#"driftwatch_state_capped_total{what="events_refused"}"#,
            ) >= 480.0
        },
    )
    .await;
    let alerts = http_get(&addr, "/api/v1/alerts?kind=capacity").unwrap();
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
    // The gauge is refreshed at most once a second.
    produce_with(&brokers, "falco", &[], &[line.clone().into_bytes()]);
    eventually(Duration::from_secs(30), "20 services tracked", || {
        metric(&addr, "driftwatch_services{phase=\"learning\"}") == 20.0
    })
    .await;
    // Still up and ingesting.
    produce_with(&brokers, "falco", &[], &vec![line.into_bytes(); 10]);
    decoded(&addr, 511.0).await;
    assert_eq!(http_get(&addr, "/healthz").unwrap(), "ok\n");
}

/// The demo's tokens and password are printed and documented: it never serves them
/// beyond this machine.
#[test]
fn demo_refuses_to_serve_its_published_tokens_beyond_loopback() {
    let reports = tempfile::tempdir().unwrap();
    for args in [
        ["--http", "0.0.0.0:0", "--postgres", "127.0.0.1:0"],
        ["--http", "127.0.0.1:0", "--postgres", "[::]:0"],
    ] {
        let out = crate::common::driftwatch()
            .arg("demo")
            .args(args)
            .arg("--reports")
            .arg(reports.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("loopback only"), "{args:?}: {err}");
    }
}

/// CRC-32C (Castagnoli), which a record batch's header carries over its contents.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A record batch (magic 2) that says it is gzip-compressed and holds no gzip: what a
/// buggy or hostile producer can put on a topic, written by hand since no Kafka client
/// produces it.
fn corrupt_batch() -> Vec<u8> {
    let garbage = b"this is no gzip stream, whatever the batch header says";
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&1i16.to_be_bytes()); // attributes: gzip
    after_crc.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    after_crc.extend_from_slice(&now.to_be_bytes()); // first timestamp
    after_crc.extend_from_slice(&now.to_be_bytes()); // max timestamp
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    after_crc.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    after_crc.extend_from_slice(&1i32.to_be_bytes()); // records
    after_crc.extend_from_slice(garbage);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let length = 4 + 1 + 4 + after_crc.len(); // leader epoch, magic, crc, the rest
    batch.extend_from_slice(&(length as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&after_crc).to_be_bytes());
    batch.extend_from_slice(&after_crc);
    batch
}

/// Sends one Produce request (v3) with `batch` for `topic`/`partition` to the broker
/// and returns the partition's error code from the response.
fn produce_raw(broker: &str, topic: &str, partition: i32, batch: &[u8]) -> i16 {
    use std::io::{Read, Write};
    let string = |s: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // Produce
    body.extend_from_slice(&3i16.to_be_bytes()); // version 3
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    string("attacker", &mut body);
    body.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    string(topic, &mut body);
    body.extend_from_slice(&1i32.to_be_bytes()); // one partition
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    let mut stream = std::net::TcpStream::connect(broker).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&(body.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    // correlation id, topics (1), name, partitions (1), index, error code
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    i16::from_be_bytes([response[at], response[at + 1]])
}

/// A batch that cannot be decompressed: an alert and a metric say so, the daemon stays
/// up and keeps ingesting the other partitions, and the lag behind the batch shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_be_decompressed_is_an_alert_not_a_silent_stall() {
    let (_cluster, brokers) = cluster("falco", 2);
    assert_eq!(produce_raw(&brokers, "falco", 0, &corrupt_batch()), 0);
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let _daemon = start(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"corrupt\"\n\
             [[kafka.topics]]\nname = \"falco\"\nformat = \"falco\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[postgres]\nenabled = false\n"
        ),
    );
    let addr = format!("127.0.0.1:{http}");
    eventually(
        Duration::from_secs(60),
        "the unreadable batch counted",
        || {
            metric(
                &addr,
                r#"driftwatch_batches_unreadable_total{error="bad_compression"}"#,
            ) >= 1.0
        },
    )
    .await;
    let alerts = http_get(&addr, "/api/v1/alerts").unwrap_or_default();
    assert!(
        alerts.contains("unreadable batches") && alerts.contains("bad_compression"),
        "{alerts}"
    );
    // The other partition is read all the same, before and after.
    let line = falco_line().into_bytes();
    let to_partition = |partition: i32, n: usize| {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for _ in 0..n {
            producer
                .send(
                    BaseRecord::<(), _>::to("falco")
                        .partition(partition)
                        .payload(&line),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    to_partition(1, 20);
    decoded(&addr, 20.0).await;
    // librdkafka reports the batch without naming its partition, so the partition
    // holding it stays at it: what is produced there after it shows as lag.
    to_partition(0, 20);
    eventually(
        Duration::from_secs(30),
        "the lag behind the unreadable batch",
        || {
            metric(
                &addr,
                r#"driftwatch_consumer_lag{topic="falco",partition="0"}"#,
            ) >= 20.0
        },
    )
    .await;
    assert!(
        http_get(&addr, "/healthz")
            .unwrap_or_default()
            .contains("ok")
    );
}
