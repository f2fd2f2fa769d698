//! `wasi:keyvalue/store` and `wasi:keyvalue/atomics`, backed by the host
//! database inside the invocation's unit of work.
//!
//! We use the ecosystem interface rather than a home-made one so guests stay
//! portable to other hosts. Buckets are namespaced per component: two
//! components opening "orders" see different data. Counters used by
//! `increment` are stored as decimal text, as other wasi:keyvalue hosts do.

use wasmtime::component::Resource;

use crate::db::DbError;
use crate::runtime::bindings::{atomics, store};
use crate::runtime::state::InvocationState;

/// Longest bucket identifier and key accepted.
const MAX_NAME_BYTES: usize = 512;
/// Largest value accepted; bigger blobs belong elsewhere.
const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// An open bucket, as held in the guest's resource table.
#[derive(Debug)]
pub struct Bucket {
    name: String,
}

/// Errors reported to the guest as `wasi:keyvalue/store.error`.
#[derive(Debug)]
pub enum KvError {
    /// Reported as `other(..)` with a guest-safe message; the detail is logged.
    Other(String),
    /// A host failure that must trap: bad handle, broken database.
    Trap(wasmtime::Error),
}

impl From<DbError> for KvError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::NotACounter { .. } | DbError::Overflow { .. } => KvError::Other(err.to_string()),
            // A failing database fails the invocation: its transaction is
            // unusable, so the guest must not carry on as if it were.
            DbError::Sqlx(e) => KvError::Trap(wasmtime::Error::msg(format!("key-value store failed: {e}"))),
        }
    }
}

impl From<wasmtime::component::ResourceTableError> for KvError {
    fn from(err: wasmtime::component::ResourceTableError) -> Self {
        KvError::Trap(wasmtime::Error::new(err))
    }
}

fn check_name(what: &str, name: &str) -> Result<(), KvError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(KvError::Other(format!("{what} longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(())
}

impl InvocationState {
    fn bucket_name(&self, bucket: &Resource<Bucket>) -> Result<String, KvError> {
        Ok(self.table.get(bucket)?.name.clone())
    }
}

impl store::Host for InvocationState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        check_name("bucket identifier", &identifier)?;
        Ok(self.table.push(Bucket { name: identifier })?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        match err {
            KvError::Other(message) => Ok(store::Error::Other(message)),
            KvError::Trap(err) => Err(err),
        }
    }
}

impl store::HostBucket for InvocationState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        check_name("key", &key)?;
        let bucket = self.bucket_name(&bucket)?;
        Ok(self.unit_of_work.kv_get(&bucket, &key).await?)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        check_name("key", &key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::Other(format!("value larger than {MAX_VALUE_BYTES} bytes")));
        }
        let bucket = self.bucket_name(&bucket)?;
        Ok(self.unit_of_work.kv_set(&bucket, &key, &value).await?)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        check_name("key", &key)?;
        let bucket = self.bucket_name(&bucket)?;
        Ok(self.unit_of_work.kv_delete(&bucket, &key).await?)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        check_name("key", &key)?;
        let bucket = self.bucket_name(&bucket)?;
        Ok(self.unit_of_work.kv_exists(&bucket, &key).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        let bucket = self.bucket_name(&bucket)?;
        let (keys, cursor) = self.unit_of_work.kv_list_keys(&bucket, cursor.unwrap_or(0)).await?;
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for InvocationState {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> Result<u64, KvError> {
        check_name("key", &key)?;
        let bucket = self.bucket_name(&bucket)?;
        Ok(self.unit_of_work.kv_increment(&bucket, &key, delta).await?)
    }
}
