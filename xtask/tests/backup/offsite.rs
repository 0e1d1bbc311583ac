//! `[backup.s3]` against moto's S3 server with signatures checked: every
//! backup is copied off-site, retention applies in the bucket too, a fresh
//! runner (an empty folder) restores from the bucket, a bad key is refused
//! without being shown, and a corrupt object never reaches the database.
use std::path::Path;

use xtask::{
    backup::{self, Backups, Offsite},
    s3::{Bucket, BucketConfig, Credentials},
};

use super::{app_database, backups, env_file, moto::Moto, names, run_cli, sql, Postgres, PASSWORD};

fn bucket(moto: &Moto, secret: &str) -> Bucket {
    Bucket::new(BucketConfig {
        endpoint: moto.endpoint.parse().unwrap(),
        region: "us-east-1".into(),
        bucket: moto.bucket.clone(),
        path_style: true,
        credentials: Credentials {
            access_key_id: moto.access_key_id.clone(),
            secret_access_key: secret.into(),
            session_token: None,
        },
    })
    .unwrap()
}

fn offsite_backups(url: &str, dir: &Path, keep: usize, moto: &Moto, secret: &str) -> Backups {
    Backups {
        offsite: Some(Offsite {
            bucket: bucket(moto, secret),
            prefix: "xtask/test/".into(),
        }),
        ..backups(url, dir, keep)
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".lock")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn every_backup_goes_to_the_bucket_and_a_fresh_runner_restores_from_it() {
    let (pg, moto) = (Postgres::start(), Moto::start().await);
    let url = app_database(&pg, 500).await;
    let here = tempfile::tempdir().unwrap();
    let b = offsite_backups(&url, here.path(), 2, &moto, &moto.secret_access_key.clone());

    let mut ids = vec![];
    for _ in 0..3 {
        let created = backup::create(&b, Some("r-s3".into())).await.unwrap();
        let synced = created.offsite.expect("an off-site copy");
        assert_eq!(synced.uploaded, std::slice::from_ref(&created.manifest.id));
        assert_eq!(synced.location, "s3://xtask-backups/xtask/test/");
        ids.push(created.manifest.id);
    }
    let offsite = b.offsite.as_ref().unwrap();
    assert_eq!(
        offsite.ids().await.unwrap(),
        [ids[2].clone(), ids[1].clone()]
    );
    // Retention took the oldest's dump too, not only its manifest.
    let keys = offsite.bucket.list("xtask/test/").await.unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains(&ids[0])), "{keys:?}");

    // A fresh runner: nothing in its folder, the bucket has everything.
    let fresh = tempfile::tempdir().unwrap();
    let b2 = offsite_backups(
        &url,
        fresh.path(),
        2,
        &moto,
        &moto.secret_access_key.clone(),
    );
    let listed = backup::list_everywhere(&b2).await.unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|l| (l.manifest.id.clone(), l.local, l.offsite))
        .collect();
    assert_eq!(
        seen,
        [(ids[2].clone(), false, true), (ids[1].clone(), false, true)]
    );

    let before = names(&url).await;
    sql(&url, "DELETE FROM items WHERE id % 2 = 0").await;
    assert_eq!(names(&url).await.len(), 250);
    let restored = backup::restore(&b2, "latest", false).await.unwrap();
    assert!(restored.passed, "{:#?}", restored.checks);
    assert_eq!(restored.id, ids[2]);
    assert_eq!(names(&url).await, before, "every row back");
    assert_eq!(
        files(fresh.path()),
        [format!("{}.dump", ids[2]), format!("{}.json", ids[2])]
    );
    let log = moto.log();
    assert!(log.contains("PUT /xtask-backups/xtask/test/"), "{log}");
    assert!(!log.contains(" 403 "), "no request was refused:\n{log}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_endpoint_unshown_and_the_next_create_catches_up() {
    let (pg, moto) = (Postgres::start(), Moto::start().await);
    let url = app_database(&pg, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-secret-marker-7f3a";
    let bad = offsite_backups(&url, dir.path(), 5, &moto, wrong);
    let error = format!("{:#}", backup::create(&bad, None).await.unwrap_err());
    assert!(error.contains("SignatureDoesNotMatch"), "{error}");
    assert!(error.contains("backup.s3.secret_access_key"), "{error}");
    assert!(
        error.contains("the next `backup create` copies it again"),
        "{error}"
    );
    assert!(
        !error.contains(wrong) && !error.contains(&moto.secret_access_key),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");
    let kept = backup::list(&bad).unwrap();
    assert_eq!(kept.len(), 1, "the backup itself is kept in the folder");

    let good = offsite_backups(&url, dir.path(), 5, &moto, &moto.secret_access_key.clone());
    let created = backup::create(&good, None).await.unwrap();
    let mut uploaded = created.offsite.unwrap().uploaded;
    uploaded.sort();
    let mut both = vec![kept[0].manifest.id.clone(), created.manifest.id];
    both.sort();
    assert_eq!(uploaded, both, "the missed copy goes up with the new one");
}

#[tokio::test]
async fn a_corrupt_object_in_the_bucket_is_refused_and_the_database_is_untouched() {
    let (pg, moto) = (Postgres::start(), Moto::start().await);
    let url = app_database(&pg, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = moto.secret_access_key.clone();
    let b = offsite_backups(&url, dir.path(), 5, &moto, &secret);
    let created = backup::create(&b, None).await.unwrap();
    let m = &created.manifest;

    // Someone (or a broken copy) leaves a cut-short dump in the bucket.
    let cut = tempfile::NamedTempFile::new().unwrap();
    let bytes = std::fs::read(&created.path).unwrap();
    std::fs::write(cut.path(), &bytes[..bytes.len() / 2]).unwrap();
    let sha = xtask::s3::sigv4::sha256_hex(&bytes[..bytes.len() / 2]);
    let key = format!("xtask/test/{}", m.file);
    b.offsite
        .as_ref()
        .unwrap()
        .bucket
        .put_file(&key, cut.path(), &sha, (bytes.len() / 2) as u64)
        .await
        .unwrap();

    sql(&url, "DELETE FROM items WHERE id <= 50").await;
    let after_delete = names(&url).await;
    let fresh = tempfile::tempdir().unwrap();
    let b2 = offsite_backups(&url, fresh.path(), 5, &moto, &secret);
    let error = format!("{:#}", backup::restore(&b2, &m.id, true).await.unwrap_err());
    assert!(error.contains("truncated or corrupt"), "{error}");
    assert!(error.contains("nothing was restored"), "{error}");
    assert_eq!(names(&url).await, after_delete, "the database is untouched");
    assert!(
        files(fresh.path()).is_empty(),
        "nothing left behind: {:?}",
        files(fresh.path())
    );
}

/// From an environment file: the keys come from the variables
/// `[backup.s3]` names, and neither they nor the database URL are printed.
#[tokio::test]
async fn the_command_line_copies_to_the_bucket_the_environment_file_names() {
    let (pg, moto) = (Postgres::start(), Moto::start().await);
    let url = app_database(&pg, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let table = format!(
        "[backup]\ndir = \"{}\"\ndatabase_url = \"env:XTASK_BACKUP_TEST_URL\"\n\n[backup.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"{}\"\nprefix = \"cli/\"\naccess_key_id = \"env:XTASK_TEST_S3_KEY\"\nsecret_access_key = \"env:XTASK_TEST_S3_SECRET\"\n",
        dir.path().join("store").display(),
        moto.endpoint,
        moto.bucket
    );
    let env_file = env_file(dir.path(), "s3test", &table);
    let vars = [
        ("XTASK_BACKUP_TEST_URL", url.as_str()),
        ("XTASK_TEST_S3_KEY", moto.access_key_id.as_str()),
        ("XTASK_TEST_S3_SECRET", moto.secret_access_key.as_str()),
    ];
    let never_shown = [PASSWORD, moto.secret_access_key.as_str()];
    let xtask = |args: &[&str]| run_cli(&env_file, args, &vars, &never_shown);
    let (code, text) = xtask(&["backup", "create"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("s3://xtask-backups/cli/s3test/"), "{text}");
    let (code, text) = xtask(&["backup", "list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("folder, s3"), "{text}");
    let (code, text) = xtask(&["backup", "list", "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed[0]["offsite"], true, "{text}");
}
