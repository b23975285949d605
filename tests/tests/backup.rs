//! An online backup taken while orders stream in restores to a box that serves.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tests::{Api, EdgeProcess, assert_gapless, edge_command, path_str, seed_demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_to_a_serving_box() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let edge = EdgeProcess::serve(&data, &[]).unwrap();
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    api.unlimited_menu(&manager).await.unwrap();
    let menu = Arc::new(api.staff_menu(&manager).await.unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for w in 0..8u32 {
        let token = api.student(w + 1).await.unwrap();
        let (api, menu, stop, placed) = (api.clone(), menu.clone(), stop.clone(), placed.clone());
        load.spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = api
                    .post(
                        "/api/student/orders",
                        Some(&token),
                        &tests::random_order(&menu, &mut rng),
                    )
                    .await
                    .unwrap();
                assert_eq!(status, 201);
                placed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while placed.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("100 orders within 60 s");
    let backup_file = dir.path().join("lunch.db");
    let before = placed.load(Ordering::SeqCst);
    let out = tokio::task::spawn_blocking({
        let (data, backup_file) = (data.clone(), backup_file.clone());
        move || {
            edge_command(&[
                "backup",
                path_str(&backup_file),
                "--data-dir",
                path_str(&data),
            ])
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.contains("backup written"), "{out}");
    let after = placed.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while load.join_next().await.is_some() {}
    })
    .await
    .expect("the load stops within 60 s");
    let source_manager = api.manager().await.unwrap();
    let source_events = api.outbox(&source_manager).await.unwrap();
    assert!(
        after > before,
        "orders were placed while the backup ran ({before} before, {after} after)"
    );
    // A second backup to the same name is refused rather than overwritten.
    assert!(
        edge_command(&[
            "backup",
            path_str(&backup_file),
            "--data-dir",
            path_str(&data)
        ])
        .is_err()
    );
    edge.terminate().unwrap();

    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(&backup_file, restored.join("canteen.db")).unwrap();
    let edge = EdgeProcess::serve(&restored, &[]).unwrap();
    let api = Api::new(&edge.base);
    let (status, ready) = api.get("/readyz", None).await.unwrap();
    assert_eq!(status, 200);
    let manager = api.manager().await.unwrap();
    let events = api.outbox(&manager).await.unwrap();
    assert_gapless(&events);
    let orders = events
        .iter()
        .filter(|e| e["kind"] == "order.placed")
        .count();
    assert!(
        orders >= 100,
        "the backup holds the orders taken before it ({orders})"
    );
    assert_eq!(ready["outbox_last_seq"].as_i64(), Some(events.len() as i64));
    // The backup is the source as it was at one instant: every event up to its last
    // one, exactly (the source went on taking orders after it).
    assert!(events.len() < source_events.len());
    assert_eq!(events[..], source_events[..events.len()]);
    // It serves: a student logs in and orders; numbering continues.
    let student = api.student(3).await.unwrap();
    let (status, order) = api
        .post("/api/student/orders", Some(&student), &json!({"lines": [{"item_id": menu[0]["id"], "quantity": 1,
            "options": tests::random_order(&menu[..1], &mut rand::rng())["lines"][0]["options"]}], "payment_mode": "counter"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{order}");
    assert_eq!(api.outbox(&manager).await.unwrap().len(), events.len() + 1);
    edge.terminate().unwrap();
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Found: the token signing key lived in the database (every backup could mint
/// manager tokens forever), and the database and backups were created 0644. Now the
/// key is a 0600 file beside the database, the data directory is 0700, a backup can be
/// encrypted with a key file, and a restored box makes a new signing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_off_backups_and_an_encrypted_backup_restores_with_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let edge = EdgeProcess::serve(&data, &[]).unwrap();
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    let student = api.student(1).await.unwrap();
    let menu = api.staff_menu(&manager).await.unwrap();
    let (status, _) = api
        .post(
            "/api/student/orders",
            Some(&student),
            &tests::random_order(&menu[..1], &mut rand::rng()),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);

    assert_eq!(mode(&data), 0o700);
    for file in ["canteen.db", "canteen.db-wal", "token.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let signing_key = std::fs::read_to_string(data.join("token.key")).unwrap();
    let signing_key = signing_key.trim().as_bytes();
    assert_eq!(signing_key.len(), 64);

    let plain = dir.path().join("plain.db");
    let key = dir.path().join("backup.key");
    let sealed = dir.path().join("sealed.bak");
    edge_command(&["backup-key", path_str(&key)]).unwrap();
    assert_eq!(mode(&key), 0o600);
    assert!(
        edge_command(&["backup-key", path_str(&key)]).is_err(),
        "never overwrites a key"
    );
    for (file, extra) in [
        (&plain, vec![]),
        (&sealed, vec!["--encrypt-with", path_str(&key)]),
    ] {
        let mut args = vec!["backup", path_str(file), "--data-dir", path_str(&data)];
        args.extend(extra);
        let out = edge_command(&args).unwrap();
        assert!(out.contains("backup written"), "{out}");
        assert_eq!(mode(file), 0o600);
    }
    let plain_bytes = std::fs::read(&plain).unwrap();
    let sealed_bytes = std::fs::read(&sealed).unwrap();
    assert!(plain_bytes.starts_with(b"SQLite format 3"));
    assert!(
        !contains(&plain_bytes, signing_key),
        "the signing key is not in a backup"
    );
    assert!(!contains(&sealed_bytes, b"SQLite format 3"));
    assert!(
        !contains(&sealed_bytes, b"2024001"),
        "no student number in the clear"
    );
    let live = std::fs::read(data.join("canteen.db")).unwrap();
    assert!(!contains(&live, signing_key), "nor in the database");
    edge.terminate().unwrap();

    // Refused restores change nothing: the wrong key, a cut file, no key, a data
    // directory that holds a database.
    let target = dir.path().join("restored");
    let other_key = dir.path().join("other.key");
    edge_command(&["backup-key", path_str(&other_key)]).unwrap();
    let cut = dir.path().join("cut.bak");
    std::fs::write(&cut, &sealed_bytes[..sealed_bytes.len() - 100]).unwrap();
    // Cut exactly after a whole chunk (header 8 + 19 bytes, chunks of 64 KiB + 16): every
    // remaining chunk is intact, only the end-of-stream mark is missing.
    let at_chunk = dir.path().join("at-chunk.bak");
    let whole_chunk = 8 + 19 + 65_536 + 16;
    assert!(
        sealed_bytes.len() > whole_chunk + 1000,
        "the backup spans chunks"
    );
    std::fs::write(&at_chunk, &sealed_bytes[..whole_chunk]).unwrap();
    for (file, key_arg, why) in [
        (&sealed, Some(&other_key), "could not be decrypted"),
        (&cut, Some(&key), "could not be decrypted"),
        (&at_chunk, Some(&key), "could not be decrypted"),
        (&sealed, None, "is encrypted"),
    ] {
        let mut args = vec!["restore", path_str(file), "--data-dir", path_str(&target)];
        if let Some(k) = key_arg {
            args.extend(["--key", path_str(k)]);
        }
        let err = edge_command(&args).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
        assert!(!target.join("canteen.db").exists());
    }
    let err = edge_command(&["restore", path_str(&plain), "--data-dir", path_str(&data)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a database"), "{err}");

    let out = edge_command(&[
        "restore",
        path_str(&sealed),
        "--key",
        path_str(&key),
        "--data-dir",
        path_str(&target),
    ])
    .unwrap();
    assert!(out.contains("restored into"), "{out}");
    assert_eq!(mode(&target.join("canteen.db")), 0o600);
    // Restored by root (an operator with sudo) into the service user's directory, the
    // database belongs to that user, or the service could not open it.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let owned = dir.path().join("owned");
        std::fs::create_dir(&owned).unwrap();
        nix::unistd::chown(
            &owned,
            Some(nix::unistd::Uid::from_raw(4242)),
            Some(nix::unistd::Gid::from_raw(4242)),
        )
        .unwrap();
        edge_command(&["restore", path_str(&plain), "--data-dir", path_str(&owned)]).unwrap();
        let meta = std::fs::metadata(owned.join("canteen.db")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4242));
    }
    let edge = EdgeProcess::serve(&target, &[]).unwrap();
    let api = Api::new(&edge.base);
    // Sessions from before the restore are not honoured: the restored box signs with
    // a new key.
    let (status, body) = api.get("/api/staff/orders", Some(&manager)).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let new_key = std::fs::read_to_string(target.join("token.key")).unwrap();
    assert_ne!(new_key.trim().as_bytes(), signing_key);
    let manager = api.manager().await.unwrap();
    let events = api.outbox(&manager).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "order.placed")
            .count(),
        1
    );
    edge.terminate().unwrap();
}
