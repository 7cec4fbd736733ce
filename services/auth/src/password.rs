//! Password hashing (argon2id with the crate's recommended parameters) off the async threads.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use cc_bus::CommandError;

/// Refuses passwords that are too short or too long, naming the field.
pub fn check_policy(password: &str) -> Result<(), CommandError> {
    let n = password.chars().count();
    if n < 6 {
        return Err(CommandError::field(
            "invalid_field",
            "password",
            "a password has at least 6 characters",
        ));
    }
    if n > 256 {
        return Err(CommandError::field(
            "invalid_field",
            "password",
            "a password has at most 256 characters",
        ));
    }
    Ok(())
}

pub async fn hash(password: String) -> Result<String, CommandError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| CommandError::internal("hashing failed"))?
    .map_err(|_| CommandError::internal("hashing failed"))
}

/// Verifies a password; `hash = None` (unknown login) still spends the same time.
pub async fn verify(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let dummy;
        let stored = match &hash {
            Some(h) => h.as_str(),
            None => {
                dummy = dummy_hash();
                dummy.as_str()
            }
        };
        let ok = PasswordHash::new(stored)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && hash.is_some()
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(b"not a password", &salt)
                .unwrap()
                .to_string()
        })
        .clone()
}
