//! `zipiq users create|list|set-role|disable|enable`: accounts made and managed from the command line (the first
//! admin is made here). Every change is audit-logged with the actor "cli". Passwords are read from standard input
//! or generated and printed once; they are never taken as arguments (arguments are visible to every user of the
//! machine in the process list).

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::Subcommand;
use rand::RngCore;

use crate::auth::passwords::Passwords;
use crate::auth::validate;
use crate::config::Config;
use crate::db::Db;
use crate::db::audit::{AuditEvent, actions};
use crate::db::users::Role;

/// The `zipiq users` commands.
#[derive(Subcommand, Debug)]
pub enum UsersAction {
    /// Make an account with a verified email. Without --password-stdin a password is generated and printed once.
    Create {
        /// The account's email address.
        email: String,
        /// Give it the admin role.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Set an account's role (admin or streamer).
    SetRole {
        /// The account's email address.
        email: String,
        /// The new role: admin or streamer.
        role: String,
    },
    /// Disable an account: its sessions end and it cannot log in.
    Disable {
        /// The account's email address.
        email: String,
    },
    /// Enable a disabled account.
    Enable {
        /// The account's email address.
        email: String,
    },
}

/// Runs one `zipiq users` command and prints what it returns.
pub async fn run(action: UsersAction, config: &Config) -> anyhow::Result<()> {
    let db = super::open_db(config).await?;
    let out = match action {
        UsersAction::Create {
            email,
            admin,
            password_stdin,
        } => create_user(&db, config, &email, admin, password_stdin).await,
        UsersAction::List => list_users(&db).await,
        UsersAction::SetRole { email, role } => set_role(&db, &email, &role).await,
        UsersAction::Disable { email } => set_disabled(&db, &email, true).await,
        UsersAction::Enable { email } => set_disabled(&db, &email, false).await,
    };
    db.close().await;
    print!("{}", out?);
    Ok(())
}

/// `zipiq users create <email> [--admin] [--password-stdin]`: a verified account. Returns the text to print.
pub async fn create_user(
    db: &Db,
    config: &Config,
    email: &str,
    admin: bool,
    password_stdin: bool,
) -> anyhow::Result<String> {
    let email = validate::email("email", email)?;
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        (line.trim_end_matches(['\r', '\n']).to_owned(), false)
    } else {
        let mut bytes = [0u8; 15];
        rand::rng().fill_bytes(&mut bytes);
        (
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes),
            true,
        )
    };
    validate::new_password("password", &password, config.auth.password_min_length)?;
    let passwords = Passwords::new(&config.auth)?;
    let hash = passwords.hash(&password).await?;
    let role = if admin { Role::Admin } else { Role::Streamer };
    let user = db.create_user(&email, &hash, role, true).await?;
    db.audit(
        AuditEvent::new(actions::USER_CREATED)
            .by("cli")
            .target(format!("user:{}", user.id))
            .detail("role", role.as_str()),
    )
    .await?;
    let mut out = format!(
        "created {} account {} (id {}), email verified\n",
        role.as_str(),
        user.email,
        user.id
    );
    if generated {
        out.push_str(&format!(
            "password (shown once; change it after logging in): {password}\n"
        ));
    }
    out.push_str(&format!("log in at {}/login\n", config.public_url()));
    Ok(out)
}

/// `zipiq users list`.
pub async fn list_users(db: &Db) -> anyhow::Result<String> {
    let mut out = String::from("id\temail\trole\tverified\tdisabled\n");
    let mut after = 0;
    loop {
        let page = db.list_users(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for u in &page {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                u.id,
                u.email,
                u.role.as_str(),
                if u.is_verified() { "yes" } else { "no" },
                if u.is_disabled() { "yes" } else { "no" }
            ));
        }
    }
    Ok(out)
}

/// `zipiq users set-role <email> <role>`.
pub async fn set_role(db: &Db, email: &str, role: &str) -> anyhow::Result<String> {
    let email = validate::email("email", email)?;
    let Some(role) = Role::parse(role) else {
        bail!("role must be admin or streamer, not {role:?}");
    };
    let Some(user) = db.user_by_email(&email).await? else {
        bail!("no account {email}");
    };
    db.set_user_role(user.id, role).await?;
    db.audit(
        AuditEvent::new(actions::ADMIN_ROLE_CHANGED)
            .by("cli")
            .target(format!("user:{}", user.id))
            .detail("from", user.role.as_str())
            .detail("to", role.as_str()),
    )
    .await?;
    Ok(format!("{email} is now {}\n", role.as_str()))
}

/// `zipiq users disable|enable <email>`.
pub async fn set_disabled(db: &Db, email: &str, disabled: bool) -> anyhow::Result<String> {
    let email = validate::email("email", email)?;
    let Some(user) = db.user_by_email(&email).await? else {
        bail!("no account {email}");
    };
    db.set_user_disabled(user.id, disabled).await?;
    let action = if disabled {
        actions::ADMIN_USER_DISABLED
    } else {
        actions::ADMIN_USER_ENABLED
    };
    db.audit(
        AuditEvent::new(action)
            .by("cli")
            .target(format!("user:{}", user.id)),
    )
    .await?;
    Ok(if disabled {
        format!(
            "{email} is disabled; every login session of it has ended, and running servers end its streams' \
             publishers and viewers within {} s\n",
            crate::sfu::key_watch::CHECK_INTERVAL.as_secs()
        )
    } else {
        format!("{email} is enabled\n")
    })
}
