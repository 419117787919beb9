//! Operations endpoints: health, readiness, Prometheus metrics and request ids.

use crate::helpers::*;

api_test!(
    health_and_readiness_answer_without_a_token,
    |app| async move {
        let health = json_ok(app.get("/healthz", "").await).await;
        assert_eq!(health["status"], "ok");
        let ready = json_ok(app.get("/readyz", "").await).await;
        assert_eq!(ready["status"], "ready");
    }
);

/// The value of an unlabelled-or-labelled sample line, e.g.
/// `parley_messages_accepted_total{kind="private"}`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

api_test!(
    metrics_count_messages_sockets_requests_and_rejections,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut bob_socket = app.ws_connect(&bob.token).await;
        app.send_text(&alice, &bob.username, "counted").await;
        // Delivery is counted when the frame is written to bob's socket.
        let delivered = ws_recv_skipping_presence(&mut bob_socket).await;
        assert_eq!(delivered["content"], "counted", "{delivered}");
        // A request without a token is a rejection for authentication.
        let refused = app.get("/devices", "").await;
        assert_eq!(refused.status().as_u16(), 401);

        let response = app.get("/metrics", "").await;
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let metrics = response.text().await.unwrap();

        let value = |series: &str| {
            sample(&metrics, series).unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"))
        };
        assert!(value(r#"parley_messages_accepted_total{kind="private"}"#) >= 1.0);
        assert!(value(r#"parley_messages_delivered_total{kind="private"}"#) >= 1.0);
        assert!(value(r#"parley_delivery_latency_seconds_count{kind="private"}"#) >= 1.0);
        assert_eq!(value("parley_open_sockets"), 1.0);
        assert_eq!(value("parley_users_online"), 1.0);
        assert!(value("parley_persistence_batch_size_count") >= 1.0);
        assert!(value("parley_persistence_commit_seconds_count") >= 1.0);
        assert!(sample(&metrics, "parley_persistence_queue_depth").is_some());
        assert!(value(r#"parley_rejected_total{reason="auth"}"#) >= 1.0);
        assert!(
            value(
                r#"parley_http_requests_total{method="POST",route="/messages/private",status="200"}"#
            ) >= 1.0
        );
        assert!(
            value(r#"parley_http_requests_total{method="GET",route="/devices",status="401"}"#)
                >= 1.0
        );
        assert!(
            value(
                r#"parley_http_request_duration_seconds_count{method="POST",route="/auth/login"}"#
            ) >= 2.0
        );
    }
);

api_test!(
    every_response_carries_a_request_id_and_a_sane_client_id_is_kept,
    |app| async move {
        let made = app.client.get(app.url("/healthz")).send().await.unwrap();
        let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.len() >= 16, "a generated id: {id}");

        let kept = app
            .client
            .get(app.url("/healthz"))
            .header("X-Request-Id", "trace-42")
            .send()
            .await
            .unwrap();
        assert_eq!(kept.headers()["x-request-id"], "trace-42");

        let replaced = app
            .client
            .get(app.url("/healthz"))
            .header("X-Request-Id", "no spaces allowed here")
            .send()
            .await
            .unwrap();
        assert_ne!(replaced.headers()["x-request-id"], "no spaces allowed here");

        // Errors carry one too.
        let missing = app.client.get(app.url("/nope")).send().await.unwrap();
        assert_eq!(missing.status().as_u16(), 404);
        assert!(missing.headers().contains_key("x-request-id"));
    }
);
