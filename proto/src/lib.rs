//! The gRPC contracts of concurrency-lab, generated from `proto/` at build time.
//!
//! - [`order::v1`]: `lab.order.v1.OrderService`, the shop.
//! - [`approval::v1`]: `lab.approval.v1.ApprovalService`, challenge approvals.
//! - [`audit::v1`]: `lab.audit.v1.AuditEvent`, the audit trail's event both services list.
//!
//! Each package also exposes its encoded `FileDescriptorSet` for gRPC server reflection, and
//! [`google_rpc`] describes the error details every error carries.
#![forbid(unsafe_code)]

/// `lab.audit.v1`: the audit trail's event, shared by both services' `OpsService`.
pub mod audit {
    /// Version 1 of the audit event.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("lab.audit.v1");

        /// Encoded `FileDescriptorSet` of `lab/audit/v1/audit.proto` and its imports.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/audit_descriptor.bin"));
    }
}

/// `lab.order.v1`: products, stock and idempotent orders.
pub mod order {
    /// Version 1 of the order contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("lab.order.v1");

        /// Encoded `FileDescriptorSet` of `lab/order/v1/*.proto` and their imports.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/order_descriptor.bin"));
    }
}

/// `lab.approval.v1`: challenges and their approval saga.
pub mod approval {
    /// Version 1 of the approval contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("lab.approval.v1");

        /// Encoded `FileDescriptorSet` of `lab/approval/v1/*.proto` and their imports.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/approval_descriptor.bin"));
    }
}

/// `google.rpc` error details (`ErrorInfo`, `BadRequest`, …), described to reflection clients
/// so grpcurl can print the details of an error; the Rust types come from `tonic-types`.
pub mod google_rpc {
    /// Encoded `FileDescriptorSet` of `google/rpc/error_details.proto` and its imports.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/error_details_descriptor.bin"));
}
