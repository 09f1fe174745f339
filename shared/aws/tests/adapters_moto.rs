//! The S3 and SQS adapters against a real moto server (started by each test).

mod support;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use dmarc_tsv_aws::{S3Store, SqsQueue};
use dmarc_tsv_core::pipeline::queue::{Queue, QueueError, ReceiveOptions};
use dmarc_tsv_core::pipeline::store::{ObjectStore, StoreError};
use support::moto::MotoServer;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "dmarc-tsv-tests")
}

/// Clients are configured explicitly (not from the environment) so tests can run in parallel.
fn s3_client(endpoint: &str, max_attempts: u32) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(max_attempts),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "dmarc-tsv-tests",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

fn store_with_bucket(rt: &Runtime, moto: &MotoServer, bucket: &str) -> S3Store {
    let client = s3_client(&moto.endpoint(), 3);
    rt.block_on(client.create_bucket().bucket(bucket).send())
        .expect("create bucket");
    S3Store::new(client, bucket, rt.handle().clone())
}

#[test]
fn s3_get_put_delete_exists_roundtrip_and_missing_keys() {
    let moto = MotoServer::start();
    let rt = runtime();
    let store = store_with_bucket(&rt, &moto, "data");
    assert_eq!(store.describe(), "s3://data");

    assert_eq!(store.get("nope/missing.eml").unwrap(), None);
    assert!(!store.exists("nope/missing.eml").unwrap());
    store
        .delete("nope/missing.eml")
        .expect("deleting a missing key is fine");

    let key = "incoming/a mail+with ü & spaces.eml";
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    store.put(key, &body).unwrap();
    assert!(store.exists(key).unwrap());
    assert_eq!(store.get(key).unwrap().as_deref(), Some(body.as_slice()));

    store.put(key, b"replaced").unwrap();
    assert_eq!(store.get(key).unwrap().as_deref(), Some(&b"replaced"[..]));

    store.put("empty", b"").unwrap();
    assert_eq!(store.get("empty").unwrap().as_deref(), Some(&b""[..]));

    store.delete(key).unwrap();
    assert!(!store.exists(key).unwrap());
    assert_eq!(store.get(key).unwrap(), None);

    let counts = store.requests();
    assert_eq!(
        (counts.get, counts.put, counts.delete, counts.head),
        (5, 3, 2, 3)
    );
}

#[test]
fn s3_get_many_returns_each_key_in_order_with_missing_keys_as_none() {
    let moto = MotoServer::start();
    let rt = runtime();
    let store = store_with_bucket(&rt, &moto, "data");
    // More keys than run at once, so the bounded window has to slide.
    let keys: Vec<String> = (0..40)
        .map(|i| format!("incoming/mail {i:02}.eml"))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        if i % 7 != 3 {
            store.put(key, format!("mail {i}").as_bytes()).unwrap();
        }
    }
    let before = store.requests();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = store.get_many(&refs);
    assert_eq!(got.len(), keys.len());
    for (i, result) in got.into_iter().enumerate() {
        let expected = (i % 7 != 3).then(|| format!("mail {i}").into_bytes());
        assert_eq!(result.unwrap(), expected, "key {i}");
    }
    let after = store.requests();
    assert_eq!(after.get - before.get, 40, "one GET per key");
    assert_eq!((after.put, after.head), (before.put, before.head));
    assert!(store.get_many(&[]).is_empty());
}

#[test]
fn s3_get_many_reports_errors_per_key() {
    let moto = MotoServer::start();
    let rt = runtime();
    let store = store_with_bucket(&rt, &moto, "data").with_max_get_bytes(4);
    store.put("small", b"ok").unwrap();
    store.put("big", b"too big").unwrap();
    let got = store.get_many(&["big", "small", "gone"]);
    assert!(matches!(&got[0], Err(StoreError::Permanent(msg)) if msg.contains("exceeds")));
    assert_eq!(got[1].as_ref().unwrap().as_deref(), Some(&b"ok"[..]));
    assert_eq!(got[2].as_ref().unwrap(), &None);
    // A bucket that does not exist: every key fails, none panics.
    let other = store.with_bucket("no-such-bucket");
    let got = other.get_many(&["a", "b"]);
    assert!(got.iter().all(|r| r.is_err()), "{got:?}");
}

#[test]
fn s3_get_refuses_objects_over_the_bound() {
    let moto = MotoServer::start();
    let rt = runtime();
    let store = store_with_bucket(&rt, &moto, "data").with_max_get_bytes(100);
    store.put("small", &[1u8; 100]).unwrap();
    store.put("big", &[1u8; 101]).unwrap();
    assert_eq!(store.get("small").unwrap().map(|b| b.len()), Some(100));
    match store.get("big") {
        Err(StoreError::Permanent(msg)) => assert!(msg.contains("exceeds"), "{msg}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[test]
fn s3_list_paginates_past_1000_keys_sorted_and_prefix_bound() {
    let moto = MotoServer::start();
    let rt = runtime();
    let store = store_with_bucket(&rt, &moto, "data");
    let client = store.client().clone();
    // Fill concurrently through the raw client; the adapter is sync and would be slow here.
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in (0..1105u32).rev() {
            let client = client.clone();
            tasks.spawn(async move {
                client
                    .put_object()
                    .bucket("data")
                    .key(format!("staging/dt=2024-01-01/{i:05}.gz"))
                    .body(vec![b'x'; (i % 7) as usize].into())
                    .send()
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task").expect("put");
        }
    });
    store.put("staging/dt=2024-01-02/other.gz", b"x").unwrap();
    store.put("stagingX", b"x").unwrap();

    let before = store.requests().list;
    let listed = store.list("staging/dt=2024-01-01/").unwrap();
    assert_eq!(
        store.requests().list - before,
        2,
        "1105 keys need two pages"
    );
    assert_eq!(listed.len(), 1105);
    for (i, info) in listed.iter().enumerate() {
        assert_eq!(info.key, format!("staging/dt=2024-01-01/{i:05}.gz"));
        assert_eq!(info.size, (i % 7) as u64);
    }
    assert_eq!(store.list("staging/").unwrap().len(), 1106);
    assert!(store.list("nothing-here/").unwrap().is_empty());
}

#[test]
fn s3_copy_reports_missing_sources_and_handles_odd_keys() {
    let moto = MotoServer::start();
    let rt = runtime();
    let store = store_with_bucket(&rt, &moto, "mails");
    let from = "incoming/Report domain=example.com+x%y ü.eml";
    store.put(from, b"mail bytes").unwrap();

    let to = "archive/20240102/incoming/Report domain=example.com+x%y ü.eml";
    assert!(store.copy(from, to).unwrap());
    assert_eq!(store.get(to).unwrap().as_deref(), Some(&b"mail bytes"[..]));
    assert_eq!(
        store.get(from).unwrap().as_deref(),
        Some(&b"mail bytes"[..]),
        "copy keeps source"
    );

    assert!(!store.copy("incoming/gone.eml", "archive/gone.eml").unwrap());
    assert!(!store.exists("archive/gone.eml").unwrap());
    assert_eq!(store.requests().copy, 2);
}

#[test]
fn s3_with_bucket_shares_client_and_counters() {
    let moto = MotoServer::start();
    let rt = runtime();
    let data = store_with_bucket(&rt, &moto, "data");
    rt.block_on(data.client().create_bucket().bucket("other").send())
        .unwrap();
    let other = data.with_bucket("other");
    other.put("k", b"v").unwrap();
    assert_eq!(data.get("k").unwrap(), None);
    assert_eq!(other.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(other.describe(), "s3://other");
    assert_eq!(data.requests().put, 1, "counters are shared");
    assert_eq!(data.requests().get, 2);
}

#[test]
fn s3_errors_are_classified_permanent_or_transient() {
    let moto = MotoServer::start();
    let rt = runtime();
    let client = s3_client(&moto.endpoint(), 1);
    let missing_bucket = S3Store::new(client, "no-such-bucket", rt.handle().clone());
    match missing_bucket.put("k", b"v") {
        Err(StoreError::Permanent(msg)) => assert!(msg.contains("NoSuchBucket"), "{msg}"),
        other => panic!("expected permanent NoSuchBucket, got {other:?}"),
    }
    match missing_bucket.list("") {
        Err(StoreError::Permanent(_)) => {}
        other => panic!("expected permanent error, got {other:?}"),
    }

    // Nothing listens on this port (moto's port after moto is gone): a dispatch failure.
    let endpoint = moto.endpoint();
    drop(moto);
    let unreachable = S3Store::new(s3_client(&endpoint, 1), "data", rt.handle().clone());
    match unreachable.get("k") {
        Err(StoreError::Transient(_)) => {}
        other => panic!("expected a transient error, got {other:?}"),
    }
}

fn queue(rt: &Runtime, moto: &MotoServer, name: &str) -> SqsQueue {
    let client = sqs_client(&moto.endpoint());
    rt.block_on(client.create_queue().queue_name(name).send())
        .expect("create queue");
    let counters = dmarc_tsv_aws::SqsCounters::default();
    let url = rt
        .block_on(dmarc_tsv_aws::resolve_queue_url(&client, name, &counters))
        .expect("queue url");
    assert!(url.starts_with("http") && url.ends_with(name), "{url}");
    assert_eq!(counters.snapshot().get_queue_url, 1);
    SqsQueue::new(client, url, rt.handle().clone())
}

fn send(rt: &Runtime, queue: &SqsQueue, bodies: impl IntoIterator<Item = String>) {
    for body in bodies {
        rt.block_on(
            queue
                .client()
                .send_message()
                .queue_url(queue.url())
                .message_body(body)
                .send(),
        )
        .expect("send");
    }
}

const QUICK: ReceiveOptions = ReceiveOptions {
    max_messages: 10,
    wait_seconds: 0,
    visibility_timeout_seconds: 60,
};

#[test]
fn sqs_receive_delivers_bodies_receipts_and_receive_counts() {
    let moto = MotoServer::start();
    let rt = runtime();
    let queue = queue(&rt, &moto, "dmarc-incoming");
    assert!(queue.receive(&QUICK).unwrap().is_empty(), "empty poll");

    send(&rt, &queue, ["hello {\"Records\":[]}".to_owned()]);
    let immediate = ReceiveOptions {
        visibility_timeout_seconds: 0,
        ..QUICK
    };
    let first = queue.receive(&immediate).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].body, "hello {\"Records\":[]}");
    assert_eq!(first[0].receive_count, 1);
    assert!(!first[0].id.is_empty() && !first[0].receipt.is_empty());

    // Visibility 0: it is back at once, received a second time.
    let second = queue.receive(&QUICK).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].receive_count, 2);

    // Hidden for 60 s now: an empty poll.
    assert!(queue.receive(&QUICK).unwrap().is_empty());
    let counts = queue.requests();
    assert_eq!((counts.receive, counts.empty_receive), (4, 2));
}

#[test]
fn sqs_delete_batches_more_than_ten_receipts() {
    let moto = MotoServer::start();
    let rt = runtime();
    let queue = queue(&rt, &moto, "dmarc-many");
    send(&rt, &queue, (0..25).map(|i| format!("message {i}")));

    let mut receipts = Vec::new();
    let mut bodies = Vec::new();
    while receipts.len() < 25 {
        let batch = queue.receive(&QUICK).unwrap();
        assert!(
            !batch.is_empty(),
            "messages went missing after {}",
            receipts.len()
        );
        assert!(batch.len() <= 10);
        for message in batch {
            receipts.push(message.receipt);
            bodies.push(message.body);
        }
    }
    bodies.sort();
    let mut expected: Vec<String> = (0..25).map(|i| format!("message {i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected);

    queue.delete(&receipts).unwrap();
    let counts = queue.requests();
    assert_eq!((counts.delete_batch, counts.deleted), (3, 25));
    queue.delete(&[]).unwrap();
    assert_eq!(
        queue.requests().delete_batch,
        3,
        "nothing to delete: no request"
    );

    let visible_again = ReceiveOptions {
        visibility_timeout_seconds: 0,
        ..QUICK
    };
    assert!(
        queue.receive(&visible_again).unwrap().is_empty(),
        "all deleted"
    );
}

#[test]
fn sqs_connect_resolves_names_and_urls_and_rejects_unknown_queues() {
    let moto = MotoServer::start();
    let rt = runtime();
    let created = queue(&rt, &moto, "by-name");
    let client = created.client().clone();
    let counters = dmarc_tsv_aws::SqsCounters::default();
    let same = rt
        .block_on(dmarc_tsv_aws::resolve_queue_url(
            &client,
            created.url(),
            &counters,
        ))
        .unwrap();
    assert_eq!(same, created.url());
    assert_eq!(
        counters.snapshot().get_queue_url,
        0,
        "a URL needs no lookup"
    );

    match rt.block_on(dmarc_tsv_aws::resolve_queue_url(
        &client,
        "does-not-exist",
        &counters,
    )) {
        Err(QueueError::Permanent(msg)) => assert!(msg.contains("does-not-exist"), "{msg}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}
