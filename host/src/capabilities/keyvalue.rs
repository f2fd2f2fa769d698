//! `wasi:keyvalue/store` and `wasi:keyvalue/atomics`, backed by the host
//! database inside the invocation's unit of work.
//!
//! We use the ecosystem interface rather than a home-made one so guests stay
//! portable to other hosts. Buckets are namespaced per component: two
//! components opening "orders" see different data. Counters used by
//! `increment` are stored as decimal text, as other wasi:keyvalue hosts do.

use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::db::{DbError, UnitOfWork};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:keyvalue/imports",
        // Every call may wait on the database, and a host bug should trap
        // the guest rather than take the process down.
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
        trappable_error_type: { "wasi:keyvalue/store.error" => super::KvError },
    });
}

pub use generated::wasi::keyvalue::{atomics, store};

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
            // Stops the guest: the invoker runs the request again.
            DbError::Conflict => KvError::Trap(wasmtime::Error::new(err)),
            // A failing database fails the invocation: its transaction is
            // unusable, so the guest must not carry on as if it were.
            DbError::Sqlx(_) | DbError::Sqlite(_) => {
                KvError::Trap(wasmtime::Error::msg(format!("key-value store failed: {err}")))
            }
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

/// What the key-value interfaces work on: the guest's open buckets and the
/// invocation's transaction.
pub struct KeyValueView<'a> {
    pub table: &'a mut ResourceTable,
    pub unit_of_work: &'a mut UnitOfWork,
}

/// Links `wasi:keyvalue` to a [`KeyValueView`].
pub struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = KeyValueView<'a>;
}

impl KeyValueView<'_> {
    fn bucket_name(&self, bucket: &Resource<Bucket>) -> Result<String, KvError> {
        Ok(self.table.get(bucket)?.name.clone())
    }
}

impl store::Host for KeyValueView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        check_name("bucket identifier", &identifier)?;
        if identifier.is_empty() {
            return Err(KvError::Other("a bucket identifier must not be empty".to_owned()));
        }
        Ok(self.table.push(Bucket { name: identifier })?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        match err {
            KvError::Other(message) => Ok(store::Error::Other(message)),
            KvError::Trap(err) => Err(err),
        }
    }
}

impl store::HostBucket for KeyValueView<'_> {
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

impl atomics::Host for KeyValueView<'_> {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> Result<u64, KvError> {
        check_name("key", &key)?;
        let bucket = self.bucket_name(&bucket)?;
        Ok(self.unit_of_work.kv_increment(&bucket, &key, delta).await?)
    }
}
