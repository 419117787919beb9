//! POST /files/upload (multipart, field `file`) and GET /files/{file_id}.

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::helpers::*;

/// Bytes that would be mangled by any text handling: NULs, invalid UTF-8,
/// CR/LF and every byte value.
fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

fn assert_upload(body: &Value, filename: &str, size: usize) -> String {
    assert_has_fields(body, &["file_id", "filename", "size", "upload_time", "url"]);
    let file_id = str_field(body, "file_id");
    uuid::Uuid::parse_str(file_id)
        .unwrap_or_else(|e| panic!("file_id should be a UUID ({e}): {body}"));
    assert_eq!(str_field(body, "filename"), filename, "{body}");
    assert_eq!(int_field(body, "size"), size as i64, "{body}");
    assert_recent(&body["upload_time"], "upload_time");
    assert_eq!(
        str_field(body, "url"),
        format!("/files/{file_id}"),
        "{body}"
    );
    file_id.to_string()
}

api_test!(uploading_a_file_returns_its_metadata, |app| async move {
    let alice = app.create_user("alice").await;
    let body = json_ok(
        app.upload_file(&alice.token, "notes.txt", b"hello, files".to_vec())
            .await,
    )
    .await;
    assert_upload(&body, "notes.txt", 12);
});

api_test!(
    a_downloaded_file_has_the_uploaded_bytes_as_an_attachment,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let payload = binary_payload(300_000);
        let body = json_ok(
            app.upload_file(&alice.token, "data.bin", payload.clone())
                .await,
        )
        .await;
        let file_id = assert_upload(&body, "data.bin", payload.len());
        // Bob may fetch it once a message he can see mentions it.
        let url = body["url"].as_str().expect("the upload has a url");
        let sent = app
            .send_private(
                &alice.token,
                &json!({"recipient": bob.username, "content": format!("here: {url}")}),
            )
            .await;
        assert_eq!(sent.status().as_u16(), 200);

        // The uploader and the recipient can fetch it by its id.
        for user in [&alice, &bob] {
            let response = app.download_file(&user.token, &file_id).await;
            assert_eq!(
                response.status().as_u16(),
                200,
                "download by {}",
                user.username
            );
            let headers = response.headers().clone();
            let content_type = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert_eq!(content_type, "application/octet-stream");
            let disposition = headers
                .get(reqwest::header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            assert!(
                disposition.starts_with("attachment"),
                "Content-Disposition should be an attachment, got {disposition:?}"
            );
            let bytes = response.bytes().await.expect("read the file");
            assert_eq!(bytes.len(), payload.len(), "same length");
            assert!(bytes.as_ref() == payload.as_slice(), "identical bytes");
        }
    }
);

api_test!(
    the_url_in_the_upload_response_downloads_the_file,
    |app| async move {
        let alice = app.create_user("alice").await;
        let body = json_ok(
            app.upload_file(&alice.token, "a.txt", b"via url".to_vec())
                .await,
        )
        .await;
        let response = app.get(str_field(&body, "url"), &alice.token).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"via url");
    }
);

api_test!(each_upload_gets_its_own_id, |app| async move {
    let alice = app.create_user("alice").await;
    let first = json_ok(
        app.upload_file(&alice.token, "same.txt", b"first".to_vec())
            .await,
    )
    .await;
    let second = json_ok(
        app.upload_file(&alice.token, "same.txt", b"second".to_vec())
            .await,
    )
    .await;
    let first_id = str_field(&first, "file_id");
    let second_id = str_field(&second, "file_id");
    assert_ne!(first_id, second_id);
    let first_bytes = app
        .download_file(&alice.token, first_id)
        .await
        .bytes()
        .await
        .unwrap();
    let second_bytes = app
        .download_file(&alice.token, second_id)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(first_bytes.as_ref(), b"first");
    assert_eq!(second_bytes.as_ref(), b"second");
});

api_test!(
    a_file_name_is_reduced_to_its_last_path_component,
    |app| async move {
        let alice = app.create_user("alice").await;
        for (sent, kept) in [
            ("../../etc/passwd", "passwd"),
            ("/tmp/x/report.pdf", "report.pdf"),
            ("dir/sub/a.txt", "a.txt"),
        ] {
            let body = json_ok(
                app.upload_file(&alice.token, sent, b"not really".to_vec())
                    .await,
            )
            .await;
            let file_id = assert_upload(&body, kept, 10);
            let response = app.download_file(&alice.token, &file_id).await;
            assert_eq!(response.status().as_u16(), 200);
            assert_eq!(response.bytes().await.unwrap().as_ref(), b"not really");
        }
    }
);

api_test!(an_upload_that_is_not_multipart_is_400, |app| async move {
    let alice = app.create_user("alice").await;
    let response = app
        .post_json("/files/upload", &alice.token, &json!({"file": "aGVsbG8="}))
        .await;
    assert_error(response, 400).await;
    let response = app
        .post_raw(
            "/files/upload",
            &alice.token,
            Some("application/octet-stream"),
            b"raw bytes".to_vec(),
        )
        .await;
    assert_error(response, 400).await;
    let response = app
        .post_raw("/files/upload", &alice.token, None, Vec::new())
        .await;
    assert_error(response, 400).await;
});

api_test!(an_upload_without_a_file_field_is_400, |app| async move {
    let alice = app.create_user("alice").await;
    let form = Form::new().text("note", "no file here").part(
        "attachment",
        Part::bytes(b"wrong field name".to_vec()).file_name("a.txt"),
    );
    assert_error(app.upload_form(&alice.token, form).await, 400).await;
    assert_error(app.upload_form(&alice.token, Form::new()).await, 400).await;
});

api_test!(
    a_file_of_exactly_the_upload_limit_is_accepted,
    config(|c| c.max_upload_bytes = 1024),
    |app| async move {
        let alice = app.create_user("alice").await;
        let payload = binary_payload(1024);
        let body = json_ok(
            app.upload_file(&alice.token, "exact.bin", payload.clone())
                .await,
        )
        .await;
        let file_id = assert_upload(&body, "exact.bin", 1024);
        let bytes = app
            .download_file(&alice.token, &file_id)
            .await
            .bytes()
            .await
            .unwrap();
        assert!(bytes.as_ref() == payload.as_slice());
    }
);

api_test!(
    a_file_over_the_upload_limit_is_413,
    config(|c| c.max_upload_bytes = 1024),
    |app| async move {
        let alice = app.create_user("alice").await;
        assert_error(
            app.upload_file(&alice.token, "big.bin", binary_payload(1025))
                .await,
            413,
        )
        .await;
        assert_error(
            app.upload_file(&alice.token, "bigger.bin", binary_payload(8 * 1024))
                .await,
            413,
        )
        .await;
        // The server is still fine afterwards.
        json_ok(
            app.upload_file(&alice.token, "small.bin", binary_payload(10))
                .await,
        )
        .await;
    }
);

api_test!(an_unknown_file_id_is_404, |app| async move {
    let alice = app.create_user("alice").await;
    json_ok(app.upload_file(&alice.token, "a.txt", b"a".to_vec()).await).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(app.download_file(&alice.token, &unknown).await, 404).await;
});

api_test!(
    a_file_id_cannot_reach_outside_the_file_store,
    |app| async move {
        let alice = app.create_user("alice").await;
        for sneaky in [
            "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
            "..%2Fparley.db",
            "not-a-uuid",
        ] {
            // A malformed id names no file: 404.
            let response = app.download_file(&alice.token, sneaky).await;
            let status = response.status().as_u16();
            assert_eq!(status, 404, "/files/{sneaky} should be 404, got {status}");
            assert_error(response, 404).await;
        }
    }
);

api_test!(files_need_a_token, |app| async move {
    let alice = app.create_user("alice").await;
    let body = json_ok(
        app.upload_file(&alice.token, "a.txt", b"secret".to_vec())
            .await,
    )
    .await;
    let file_id = str_field(&body, "file_id");
    assert_error(app.upload_file("", "b.txt", b"anon".to_vec()).await, 401).await;
    assert_error(app.download_file("", file_id).await, 401).await;
});

/// Every regular file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

api_test!(
    uploaded_bytes_are_kept_under_the_data_dir,
    |app| async move {
        let alice = app.create_user("alice").await;
        let payload = format!("marker {}", uuid::Uuid::new_v4()).into_bytes();
        json_ok(
            app.upload_file(&alice.token, "marker.txt", payload.clone())
                .await,
        )
        .await;
        let holders: Vec<_> = files_under(&app.data_dir)
            .into_iter()
            .filter(|path| std::fs::read(path).is_ok_and(|bytes| bytes == payload))
            .collect();
        assert_eq!(
            holders.len(),
            1,
            "one file under the data dir holds the upload: {holders:?}"
        );
    }
);

api_test!(
    the_default_sqlite_database_lives_in_the_data_dir,
    |app| async move {
        app.create_user("alice").await;
        let databases: Vec<_> = files_under(&app.data_dir)
            .into_iter()
            .filter(|path| {
                std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"SQLite format 3\0"))
            })
            .collect();
        match app.backend {
            Backend::Sqlite => assert!(
                !databases.is_empty(),
                "no SQLite database under the data dir"
            ),
            Backend::Postgres => assert!(
                databases.is_empty(),
                "Postgres runs also wrote SQLite: {databases:?}"
            ),
        }
    }
);
