//! The userspace backend: the exception engine is the data path; volumes are served to the
//! kernel as FUSE files with loop devices on top.

pub mod fuse_fs;
pub mod loop_device;

#[cfg(test)]
mod fuse_tests;
