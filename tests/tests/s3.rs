//! `object_store` against a real S3 server (moto's, from the test venv),
//! every request signed: round trips, listing under a prefix, conditional
//! creates, refused signatures and multipart uploads.

use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path;
use object_store::{Error, ObjectStore, ObjectStoreExt, PutMode, PutPayload, WriteMultipart};
use tokio_stream::StreamExt;

use knowton_tests::s3::TestS3;

/// The bytes stored at `location`.
async fn read(store: &impl ObjectStore, location: &Path) -> Vec<u8> {
    store
        .get(location)
        .await
        .unwrap_or_else(|e| panic!("get {location}: {e}"))
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Every object under `prefix`, sorted.
async fn list(store: &impl ObjectStore, prefix: &str) -> Vec<String> {
    let prefix = Path::from(prefix);
    let mut listed: Vec<String> = store
        .list(Some(&prefix))
        .map(|meta| meta.expect("a listing").location.to_string())
        .collect()
        .await;
    listed.sort();
    listed
}

/// `len` bytes that differ from part to part (xorshift), so that parts
/// uploaded out of order or twice would not round-trip.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_list_round_trip_under_the_prefix() {
    let s3 = TestS3::start().await;
    let store = s3.store("repo");
    let acme_1 = Path::from("tenants/acme/1");
    store
        .put(&acme_1, PutPayload::from(b"acme one\0\xff".as_slice()))
        .await
        .unwrap();
    store
        .put(&Path::from("tenants/acme/2"), PutPayload::from("acme two"))
        .await
        .unwrap();
    store
        .put(&Path::from("tenants/globex/1"), PutPayload::from("globex"))
        .await
        .unwrap();

    assert_eq!(read(&store, &acme_1).await, b"acme one\0\xff");
    assert_eq!(
        list(&store, "tenants/acme").await,
        ["tenants/acme/1", "tenants/acme/2"]
    );
    // The store's prefix is a real key prefix in the bucket.
    let bucket = s3.store("");
    assert_eq!(
        list(&bucket, "").await,
        [
            "repo/tenants/acme/1",
            "repo/tenants/acme/2",
            "repo/tenants/globex/1"
        ]
    );
    assert!(matches!(
        store.get(&Path::from("tenants/initech/1")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_create_of_an_existing_key_fails_and_keeps_the_first() {
    let s3 = TestS3::start().await;
    let store = s3.store("repo");
    let chunk = Path::from("chunks/ab/abcdef");
    store
        .put_opts(&chunk, PutPayload::from("first"), PutMode::Create.into())
        .await
        .expect("a create of a new key succeeds");

    let second = store
        .put_opts(&chunk, PutPayload::from("second"), PutMode::Create.into())
        .await;
    assert!(
        matches!(second, Err(Error::AlreadyExists { .. })),
        "a second create is refused as AlreadyExists, got {second:?}"
    );
    assert_eq!(read(&store, &chunk).await, b"first");

    // An unconditional put still overwrites: the refusal was the condition's.
    store.put(&chunk, PutPayload::from("third")).await.unwrap();
    assert_eq!(read(&store, &chunk).await, b"third");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_signed_with_a_wrong_secret_is_refused() {
    let s3 = TestS3::start().await;
    let good = s3.store("");
    let existing = Path::from("existing");
    good.put(&existing, PutPayload::from("kept")).await.unwrap();

    let mut secret = s3.secret_access_key().to_owned();
    secret.replace_range(0..1, if secret.starts_with('x') { "y" } else { "x" });
    let forged = s3.builder().with_secret_access_key(secret).build().unwrap();
    let put = forged
        .put(&Path::from("forged"), PutPayload::from("forged"))
        .await;
    assert!(
        matches!(put, Err(Error::PermissionDenied { .. })),
        "a put signed with a wrong secret is refused, got {put:?}"
    );
    let get = forged.get(&existing).await;
    assert!(
        matches!(get, Err(Error::PermissionDenied { .. })),
        "a get signed with a wrong secret is refused, got {:?}",
        get.map(|r| r.meta)
    );
    let overwrite = forged.put(&existing, PutPayload::from("forged")).await;
    assert!(overwrite.is_err(), "got {overwrite:?}");

    assert_eq!(read(&good, &existing).await, b"kept");
    assert!(matches!(
        good.head(&Path::from("forged")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_of_12_mib_round_trips() {
    const MIB: usize = 1024 * 1024;
    let s3 = TestS3::start().await;
    let store = s3.store("repo");
    let location = Path::from("backups/big");
    let data = noise(12 * MIB);

    // Parts of 5 MiB (S3's least but the last): 5 + 5 + 2.
    let mut upload = WriteMultipart::new(store.put_multipart(&location).await.unwrap());
    for piece in data.chunks(MIB) {
        upload.wait_for_capacity(2).await.unwrap();
        upload.write(piece);
    }
    upload.finish().await.unwrap();

    let meta = store.head(&location).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    // S3 tags an object completed from N parts with an ETag ending in -N.
    let e_tag = meta.e_tag.expect("an ETag");
    assert!(
        e_tag.trim_matches('"').ends_with("-3"),
        "an object of three parts, ETag {e_tag}"
    );
    assert!(
        read(&store, &location).await == data,
        "the bytes round-trip"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_for_a_child_process_reaches_the_bucket() {
    let s3 = TestS3::start().await;
    // What `AmazonS3Builder::from_env` does with the process environment.
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(s3.bucket());
    for (name, value) in s3.env() {
        let key: AmazonS3ConfigKey = name
            .to_ascii_lowercase()
            .parse()
            .unwrap_or_else(|e| panic!("{name} is an object_store setting: {e}"));
        builder = builder.with_config(key, value);
    }
    let from_env = builder.build().unwrap();
    let location = Path::from("from-env");
    from_env
        .put(&location, PutPayload::from("env"))
        .await
        .unwrap();
    assert_eq!(read(&s3.store(""), &location).await, b"env");
}
