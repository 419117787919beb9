//! POST /devices, GET /devices, DELETE /devices/{device_id}, and a device's
//! `login_status`/`last_seen` as its socket comes and goes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

fn assert_device(device: &Value, device_id: &str, name: &str, kind: &str) {
    assert_has_fields(
        device,
        &[
            "id",
            "device_id",
            "device_name",
            "device_type",
            "registered_at",
        ],
    );
    assert!(
        int_field(device, "id") > 0,
        "id should be positive: {device}"
    );
    assert_eq!(str_field(device, "device_id"), device_id, "{device}");
    assert_eq!(str_field(device, "device_name"), name, "{device}");
    assert_eq!(str_field(device, "device_type"), kind, "{device}");
    assert_recent(&device["registered_at"], "registered_at");
}

fn assert_listed_device(device: &Value, device_id: &str, name: &str, kind: &str) {
    assert_device(device, device_id, name, kind);
    assert_has_fields(device, &["last_seen", "login_status"]);
    if !device["last_seen"].is_null() {
        assert_timestamp(&device["last_seen"], "last_seen");
    }
    bool_field(device, "login_status");
}

api_test!(registering_a_device_returns_it, |app| async move {
    let alice = app.create_user("alice").await;
    let device = json_ok(
        app.register_device(
            &alice.token,
            &json!({"device_id": "phone-1", "device_name": "Alice's phone", "device_type": "mobile"}),
        )
        .await,
    )
    .await;
    assert_device(&device, "phone-1", "Alice's phone", "mobile");
});

api_test!(device_name_and_type_have_defaults, |app| async move {
    let alice = app.create_user("alice").await;
    let device = json_ok(
        app.register_device(&alice.token, &json!({"device_id": "laptop"}))
            .await,
    )
    .await;
    assert_device(&device, "laptop", "", "unknown");
});

api_test!(
    listing_devices_shows_mine_only_never_seen_and_offline,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let phone = json_ok(
            app.register_device(
                &alice.token,
                &json!({"device_id": "phone-1", "device_name": "Phone", "device_type": "mobile"}),
            )
            .await,
        )
        .await;
        let laptop = json_ok(
        app.register_device(
            &alice.token,
            &json!({"device_id": "laptop-1", "device_name": "Laptop", "device_type": "desktop"}),
        )
        .await,
    )
    .await;
        json_ok(
            app.register_device(&bob.token, &json!({"device_id": "bobs-phone"}))
                .await,
        )
        .await;

        let listed = json_ok(app.list_devices(&alice.token).await).await;
        let listed = array(&listed, "GET /devices");
        assert_eq!(
            listed.len(),
            2,
            "alice sees her two devices only: {listed:?}"
        );
        for (registered, name, kind) in
            [(&phone, "Phone", "mobile"), (&laptop, "Laptop", "desktop")]
        {
            let device_id = str_field(registered, "device_id");
            let entry = listed
                .iter()
                .find(|d| d["device_id"] == device_id)
                .unwrap_or_else(|| panic!("{device_id} is not listed: {listed:?}"));
            assert_listed_device(entry, device_id, name, kind);
            assert_eq!(entry["id"], registered["id"]);
            assert_eq!(entry["registered_at"], registered["registered_at"]);
            assert!(
                entry["last_seen"].is_null(),
                "never connected, so last_seen is null: {entry}"
            );
            assert!(!bool_field(entry, "login_status"), "not connected: {entry}");
        }

        let bobs = json_ok(app.list_devices(&bob.token).await).await;
        assert_eq!(array(&bobs, "GET /devices").len(), 1, "{bobs}");
    }
);

api_test!(
    a_user_without_devices_gets_an_empty_list,
    |app| async move {
        let alice = app.create_user("alice").await;
        let listed = json_ok(app.list_devices(&alice.token).await).await;
        assert_eq!(array(&listed, "GET /devices").len(), 0, "{listed}");
    }
);

api_test!(
    re_registering_my_device_updates_it_and_keeps_its_id,
    |app| async move {
        let alice = app.create_user("alice").await;
        let first = json_ok(
        app.register_device(
            &alice.token,
            &json!({"device_id": "phone-1", "device_name": "Old name", "device_type": "mobile"}),
        )
        .await,
    )
    .await;
        let second = json_ok(
        app.register_device(
            &alice.token,
            &json!({"device_id": "phone-1", "device_name": "New name", "device_type": "tablet"}),
        )
        .await,
    )
    .await;
        assert_device(&second, "phone-1", "New name", "tablet");
        assert_eq!(second["id"], first["id"], "the same device keeps its id");

        let listed = json_ok(app.list_devices(&alice.token).await).await;
        let listed = array(&listed, "GET /devices");
        assert_eq!(listed.len(), 1, "still one device: {listed:?}");
        assert_listed_device(&listed[0], "phone-1", "New name", "tablet");
        assert_eq!(listed[0]["id"], first["id"]);
    }
);

api_test!(another_users_device_id_is_409, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    json_ok(
        app.register_device(
            &alice.token,
            &json!({"device_id": "shared-id", "device_name": "Alice's"}),
        )
        .await,
    )
    .await;
    let response = app
        .register_device(
            &bob.token,
            &json!({"device_id": "shared-id", "device_name": "Bob's"}),
        )
        .await;
    assert_error(response, 409).await;

    // Alice's device is untouched and Bob has none.
    let entry = app
        .device_entry(&alice.token, "shared-id")
        .await
        .expect("still alice's");
    assert_eq!(str_field(&entry, "device_name"), "Alice's");
    let bobs = json_ok(app.list_devices(&bob.token).await).await;
    assert_eq!(array(&bobs, "GET /devices").len(), 0, "{bobs}");
});

api_test!(
    device_ids_of_1_and_128_characters_are_accepted,
    |app| async move {
        let alice = app.create_user("alice").await;
        let longest = "d".repeat(128);
        for device_id in ["x", longest.as_str(), "Phone_1.a-b:c@d+e"] {
            let device = json_ok(
                app.register_device(&alice.token, &json!({"device_id": device_id}))
                    .await,
            )
            .await;
            assert_eq!(str_field(&device, "device_id"), device_id);
        }
    }
);

api_test!(a_bad_device_id_is_400_naming_device_id, |app| async move {
    let alice = app.create_user("alice").await;
    let too_long = "d".repeat(129);
    for bad in [
        "",
        too_long.as_str(),
        "my phone",
        " phone",
        "phone\t",
        "line\nbreak",
        "bell\u{7}",
        "nul\u{0}",
    ] {
        let response = app
            .register_device(&alice.token, &json!({"device_id": bad}))
            .await;
        let status = response.status().as_u16();
        assert_eq!(status, 400, "device_id {bad:?} should be 400, got {status}");
        assert_error_naming(response, 400, "device_id").await;
    }
    let listed = json_ok(app.list_devices(&alice.token).await).await;
    assert_eq!(
        array(&listed, "GET /devices").len(),
        0,
        "nothing stored: {listed}"
    );
});

api_test!(
    registering_a_device_without_device_id_is_400_naming_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        let response = app
            .register_device(
                &alice.token,
                &json!({"device_name": "Phone", "device_type": "mobile"}),
            )
            .await;
        assert_error_naming(response, 400, "device_id").await;
    }
);

api_test!(
    registering_a_device_with_a_field_of_the_wrong_type_is_400_naming_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        for (field, value) in [
            ("device_id", json!(17)),
            ("device_name", json!({"name": "x"})),
            ("device_type", json!(["mobile"])),
        ] {
            let mut body =
                json!({"device_id": "phone-1", "device_name": "Phone", "device_type": "mobile"});
            body[field] = value;
            assert_error_naming(app.register_device(&alice.token, &body).await, 400, field).await;
        }
    }
);

api_test!(deleting_my_device_is_204_and_removes_it, |app| async move {
    let alice = app.create_user("alice").await;
    json_ok(
        app.register_device(&alice.token, &json!({"device_id": "phone-1"}))
            .await,
    )
    .await;
    json_ok(
        app.register_device(&alice.token, &json!({"device_id": "laptop-1"}))
            .await,
    )
    .await;

    let response = app.delete_device(&alice.token, "phone-1").await;
    assert_eq!(response.status().as_u16(), 204);
    let body = response.bytes().await.expect("read the body");
    assert!(body.is_empty(), "a 204 has no body, got {body:?}");

    assert!(
        app.device_entry(&alice.token, "phone-1").await.is_none(),
        "phone-1 is gone"
    );
    assert!(
        app.device_entry(&alice.token, "laptop-1").await.is_some(),
        "laptop-1 stays"
    );

    // Deleting it again: it no longer exists.
    assert_error(app.delete_device(&alice.token, "phone-1").await, 404).await;
});

api_test!(deleting_an_unknown_device_is_404, |app| async move {
    let alice = app.create_user("alice").await;
    assert_error(
        app.delete_device(&alice.token, "never-registered").await,
        404,
    )
    .await;
});

api_test!(
    deleting_someone_elses_device_is_404_and_keeps_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "alices-phone"}))
                .await,
        )
        .await;
        // Others' devices are hidden, as for the socket handshake.
        let response = app.delete_device(&bob.token, "alices-phone").await;
        assert_error(response, 404).await;
        assert!(
            app.device_entry(&alice.token, "alices-phone")
                .await
                .is_some(),
            "still there"
        );
    }
);

api_test!(
    a_connected_device_is_logged_in_and_seen_then_logged_out,
    |app| async move {
        let alice = app.create_user("alice").await;
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "phone-1"}))
                .await,
        )
        .await;
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "laptop-1"}))
                .await,
        )
        .await;
        let before = app
            .device_entry(&alice.token, "phone-1")
            .await
            .expect("listed");
        assert!(before["last_seen"].is_null(), "never connected: {before}");
        assert!(!bool_field(&before, "login_status"), "{before}");

        let ws = app
            .ws_connect_query("device_id=phone-1", Some(&alice.token))
            .await;

        let online = app
            .poll_device(
                &alice.token,
                "phone-1",
                "login_status true with last_seen set",
                |d| d["login_status"] == true && !d["last_seen"].is_null(),
            )
            .await;
        assert_listed_device(&online, "phone-1", "", "unknown");
        assert_recent(&online["last_seen"], "last_seen");
        // The other device is not affected.
        let laptop = app
            .device_entry(&alice.token, "laptop-1")
            .await
            .expect("listed");
        assert!(!bool_field(&laptop, "login_status"), "{laptop}");
        assert!(laptop["last_seen"].is_null(), "{laptop}");

        ws_close(ws).await;

        let offline = app
            .poll_device(
                &alice.token,
                "phone-1",
                "login_status false after closing",
                |d| d["login_status"] == false,
            )
            .await;
        assert_recent(&offline["last_seen"], "last_seen after disconnecting");
    }
);

api_test!(
    a_socket_without_device_id_logs_in_no_device,
    |app| async move {
        let alice = app.create_user("alice").await;
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "phone-1"}))
                .await,
        )
        .await;
        let ws = app.ws_connect(&alice.token).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let entry = app
            .device_entry(&alice.token, "phone-1")
            .await
            .expect("listed");
        assert!(!bool_field(&entry, "login_status"), "{entry}");
        ws_close(ws).await;
    }
);

api_test!(
    an_unknown_device_id_refuses_the_handshake_with_404,
    |app| async move {
        let alice = app.create_user("alice").await;
        let refused = app
            .ws_try_connect("device_id=no-such-device", Some(&alice.token))
            .await;
        assert_handshake_status(refused, 404);
        let response = app
            .ws_refusal(
                "device_id=no-such-device",
                Some(&format!("Bearer {}", alice.token)),
            )
            .await;
        assert_error(response, 404).await;
    }
);

api_test!(
    another_users_device_id_refuses_the_handshake_with_404,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "alices-phone"}))
                .await,
        )
        .await;
        let refused = app
            .ws_try_connect("device_id=alices-phone", Some(&bob.token))
            .await;
        assert_handshake_status(refused, 404);
        let entry = app
            .device_entry(&alice.token, "alices-phone")
            .await
            .expect("listed");
        assert!(!bool_field(&entry, "login_status"), "{entry}");
    }
);
