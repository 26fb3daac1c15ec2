//! The account tables on SQLite and on PostgreSQL: refresh-token rotation and reuse, single-use expiring email
//! tokens, stream ownership and soft deletion, the audit log's filters.

use zipiq::auth::tokens;
use zipiq::db::DbError;
use zipiq::db::audit::{AuditEvent, AuditQuery};
use zipiq::db::now_ms;
use zipiq::db::streams::Visibility;
use zipiq::db::users::{RefreshOutcome, Role, TokenPurpose};

use crate::databases::both;

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family_on_both_engines() {
    for t in both().await {
        let db = &t.db;
        let user = db
            .create_user("a@example.org", "$argon2id$fake", Role::Streamer, true)
            .await
            .expect("user");
        assert!(matches!(
            db.create_user("a@example.org", "x", Role::Streamer, true)
                .await,
            Err(DbError::Conflict(_))
        ));
        let later = now_ms() + 60_000;
        let sid = db
            .create_login_session(user.id, "127.0.0.1", "test", "h1", later)
            .await
            .expect("session");
        let state = db.session_state(sid, user.id).await.unwrap().unwrap();
        assert!(!state.revoked);
        assert!(db.session_state(sid, user.id + 1).await.unwrap().is_none());
        let r = db.rotate_refresh_token("h1", "h2", later).await.unwrap();
        assert!(
            matches!(r, RefreshOutcome::Rotated { session_id, .. } if session_id == sid),
            "{}",
            t.name
        );
        let r = db.rotate_refresh_token("h2", "h3", later).await.unwrap();
        assert!(matches!(r, RefreshOutcome::Rotated { .. }));
        // h1 again: reuse; the family ends.
        let r = db.rotate_refresh_token("h1", "h4", later).await.unwrap();
        assert!(
            matches!(r, RefreshOutcome::Reused { session_id, .. } if session_id == sid),
            "{}",
            t.name
        );
        assert!(
            db.session_state(sid, user.id)
                .await
                .unwrap()
                .unwrap()
                .revoked
        );
        let r = db.rotate_refresh_token("h3", "h5", later).await.unwrap();
        assert!(matches!(r, RefreshOutcome::Refused), "{}", t.name);
        assert!(matches!(
            db.rotate_refresh_token("unknown", "h6", later)
                .await
                .unwrap(),
            RefreshOutcome::Refused
        ));
        // An expired, never used token is refused without revoking anything.
        let s2 = db
            .create_login_session(user.id, "", "", "old", now_ms() - 1)
            .await
            .unwrap();
        assert!(matches!(
            db.rotate_refresh_token("old", "h7", later).await.unwrap(),
            RefreshOutcome::Refused
        ));
        assert!(
            !db.session_state(s2, user.id)
                .await
                .unwrap()
                .unwrap()
                .revoked
        );
        // A password change revokes every session.
        let s3 = db
            .create_login_session(user.id, "", "", "h8", later)
            .await
            .unwrap();
        assert_eq!(
            db.change_password(user.id, "$argon2id$new").await.unwrap(),
            2
        );
        assert!(
            db.session_state(s3, user.id)
                .await
                .unwrap()
                .unwrap()
                .revoked
        );
        t.drop_db().await;
    }
}

#[tokio::test]
async fn email_tokens_work_once_until_they_expire_on_both_engines() {
    for t in both().await {
        let db = &t.db;
        let user = db
            .create_user("b@example.org", "$argon2id$fake", Role::Streamer, false)
            .await
            .unwrap();
        let token = tokens::generate(tokens::VERIFY_PREFIX);
        db.create_email_token(
            user.id,
            TokenPurpose::Verify,
            &tokens::hash(&token),
            now_ms() + 60_000,
        )
        .await
        .unwrap();
        // A reset token does not verify.
        assert!(
            db.reset_password_with(&tokens::hash(&token), "x")
                .await
                .unwrap()
                .is_none()
        );
        let verified = db
            .verify_email_with(&tokens::hash(&token))
            .await
            .unwrap()
            .expect("verified");
        assert!(verified.is_verified(), "{}", t.name);
        assert!(
            db.verify_email_with(&tokens::hash(&token))
                .await
                .unwrap()
                .is_none(),
            "single use"
        );
        let expired = tokens::generate(tokens::RESET_PREFIX);
        db.create_email_token(
            user.id,
            TokenPurpose::Reset,
            &tokens::hash(&expired),
            now_ms() - 1,
        )
        .await
        .unwrap();
        assert!(
            db.reset_password_with(&tokens::hash(&expired), "x")
                .await
                .unwrap()
                .is_none(),
            "{}: expired",
            t.name
        );
        // A newer reset link replaces the older one.
        let first = tokens::generate(tokens::RESET_PREFIX);
        let second = tokens::generate(tokens::RESET_PREFIX);
        for tok in [&first, &second] {
            db.create_email_token(
                user.id,
                TokenPurpose::Reset,
                &tokens::hash(tok),
                now_ms() + 60_000,
            )
            .await
            .unwrap();
        }
        assert!(
            db.reset_password_with(&tokens::hash(&first), "x")
                .await
                .unwrap()
                .is_none()
        );
        let u = db
            .reset_password_with(&tokens::hash(&second), "$argon2id$reset")
            .await
            .unwrap()
            .expect("reset");
        assert_eq!(u.password_hash, "$argon2id$reset");
        t.drop_db().await;
    }
}

#[tokio::test]
async fn streams_have_owners_and_a_deleted_name_is_free_again_on_both_engines() {
    for t in both().await {
        let db = &t.db;
        let owner = db
            .create_user("c@example.org", "h", Role::Streamer, true)
            .await
            .unwrap();
        let (row, key) = db
            .create_owned_stream("show", Some(owner.id), Visibility::Private)
            .await
            .unwrap();
        assert_eq!(row.owner_id, Some(owner.id));
        assert_eq!(row.visibility, Visibility::Private);
        assert!(zipiq::secrets::stream_keys::verify(
            &key,
            row.key_hash.as_deref().unwrap()
        ));
        let broadcast = db.create_broadcast(row.id, "node").await.unwrap();
        assert_eq!(db.streams_of(owner.id).await.unwrap().len(), 1);
        assert_eq!(db.count_streams_of(owner.id).await.unwrap(), 1);
        assert!(db.public_stream_names().await.unwrap().is_empty());
        db.rename_stream(row.id, "show-2").await.unwrap();
        assert!(db.find_stream("show").await.unwrap().is_none());
        assert_eq!(db.bump_viewer_token_version(row.id).await.unwrap(), 1);
        db.delete_stream(row.id).await.unwrap();
        assert!(
            db.find_stream("show-2").await.unwrap().is_none(),
            "{}",
            t.name
        );
        assert!(db.stream_by_id(row.id).await.unwrap().is_none());
        assert_eq!(db.count_streams_of(owner.id).await.unwrap(), 0);
        // The broadcast stays, the name is free.
        assert!(db.broadcast(broadcast).await.unwrap().is_some());
        let (again, _) = db
            .create_owned_stream("show-2", Some(owner.id), Visibility::Public)
            .await
            .unwrap();
        assert_ne!(again.id, row.id);
        assert_eq!(
            db.public_stream_names().await.unwrap(),
            vec!["show-2".to_owned()]
        );
        assert!(matches!(
            db.delete_stream(row.id).await,
            Err(DbError::NotFound(_))
        ));
        t.drop_db().await;
    }
}

#[tokio::test]
async fn the_audit_log_filters_by_action_actor_and_page_on_both_engines() {
    for t in both().await {
        let db = &t.db;
        for i in 0..5 {
            db.audit(
                AuditEvent::new("wallet.added")
                    .by_user(7, "admin@example.org")
                    .from_ip("192.0.2.1")
                    .target(format!("wallet:{i}"))
                    .detail("n", i),
            )
            .await
            .unwrap();
        }
        db.audit(AuditEvent::new("login").failed().from_ip("192.0.2.2"))
            .await
            .unwrap();
        let all = db
            .audit_log(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 6, "{}", t.name);
        assert_eq!(all[0].action, "login", "newest first");
        let wallets = db
            .audit_log(&AuditQuery {
                action: Some("wallet.added".into()),
                actor_id: Some(7),
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(wallets.len(), 2);
        assert_eq!(wallets[0].target.as_deref(), Some("wallet:4"));
        assert_eq!(wallets[0].details["n"], 4);
        let older = db
            .audit_log(&AuditQuery {
                action: Some("wallet.added".into()),
                before_id: Some(wallets[1].id),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(older.len(), 3, "{}", t.name);
        t.drop_db().await;
    }
}
