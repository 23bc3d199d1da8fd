//! `NtStatus`: names, severities and conversions.

use kmdf::{NtError, NtStatus};

#[test]
fn names_print_as_the_wdk_spells_them() {
    for (status, name, raw) in [
        (NtStatus::SUCCESS, "STATUS_SUCCESS", 0x0000_0000_u32),
        (NtStatus::PENDING, "STATUS_PENDING", 0x0000_0103),
        (NtStatus::UNSUCCESSFUL, "STATUS_UNSUCCESSFUL", 0xC000_0001),
        (NtStatus::INVALID_PARAMETER, "STATUS_INVALID_PARAMETER", 0xC000_000D),
        (NtStatus::DELETE_PENDING, "STATUS_DELETE_PENDING", 0xC000_0056),
        (NtStatus::INSUFFICIENT_RESOURCES, "STATUS_INSUFFICIENT_RESOURCES", 0xC000_009A),
        (NtStatus::INVALID_DEVICE_STATE, "STATUS_INVALID_DEVICE_STATE", 0xC000_0184),
        (NtStatus::POSSIBLE_DEADLOCK, "STATUS_POSSIBLE_DEADLOCK", 0xC000_0194),
        (NtStatus::DEVICE_BUSY, "STATUS_DEVICE_BUSY", 0x8000_0011),
        (NtStatus::OBJECT_NAME_EXISTS, "STATUS_OBJECT_NAME_EXISTS", 0x4000_0000),
        (
            NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL,
            "STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL",
            0xC020_020C,
        ),
        (NtStatus::WDF_PARENT_NOT_SPECIFIED, "STATUS_WDF_PARENT_NOT_SPECIFIED", 0xC020_0212),
    ] {
        assert_eq!(status.to_raw(), raw.cast_signed(), "{name}");
        assert_eq!(status, NtStatus::from_u32(raw));
        assert_eq!(status.to_string(), name);
        assert_eq!(status.name(), Some(name));
        assert_eq!(format!("{status:?}"), format!("{name} (0x{raw:08X})"));
    }
}

#[test]
fn unknown_codes_print_their_value() {
    let status = NtStatus::from_u32(0xC0DE_0001);
    assert_eq!(status.name(), None);
    assert_eq!(status.to_string(), "NTSTATUS 0xC0DE0001");
    assert_eq!(format!("{status:?}"), "NTSTATUS 0xC0DE0001");
}

#[test]
fn severity_follows_nt_success() {
    // Success and informational codes are NT_SUCCESS; warnings and errors are not.
    assert!(NtStatus::SUCCESS.is_success());
    assert!(NtStatus::PENDING.is_success());
    assert!(NtStatus::OBJECT_NAME_EXISTS.is_success());
    assert!(NtStatus::OBJECT_NAME_EXISTS.is_information());
    assert!(NtStatus::DEVICE_BUSY.is_failure());
    assert!(NtStatus::DEVICE_BUSY.is_warning());
    assert!(!NtStatus::DEVICE_BUSY.is_error());
    assert!(NtStatus::UNSUCCESSFUL.is_failure());
    assert!(NtStatus::UNSUCCESSFUL.is_error());
    assert!(!NtStatus::UNSUCCESSFUL.is_warning());
    assert_eq!(NtStatus::SUCCESS.ok(), Ok(()));
    assert_eq!(NtStatus::TIMEOUT.ok(), Ok(()));
    assert_eq!(NtStatus::CANCELLED.ok(), Err(NtError::CANCELLED));
}

#[test]
fn converts_to_and_from_raw_and_results() {
    assert_eq!(i32::from(NtStatus::UNSUCCESSFUL), -1_073_741_823);
    assert_eq!(NtStatus::from(-1_073_741_823), NtStatus::UNSUCCESSFUL);
    assert_eq!(NtStatus::from(Ok(())), NtStatus::SUCCESS);
    assert_eq!(NtStatus::from(Err(NtError::DEVICE_REMOVED)), NtStatus::DEVICE_REMOVED);
}

#[test]
fn an_error_is_a_failure_code_and_nothing_else() {
    assert_eq!(NtError::new(NtStatus::SUCCESS), None);
    assert_eq!(NtError::new(NtStatus::WDF_QUEUED), None, "informational is a success");
    assert_eq!(NtError::new(NtStatus::DEVICE_BUSY), Some(NtError::DEVICE_BUSY), "a warning");
    assert_eq!(NtError::try_from(NtStatus::PENDING), Err(NtStatus::PENDING));
    assert_eq!(NtError::try_from(NtStatus::CANCELLED), Ok(NtError::CANCELLED));
    assert_eq!(NtStatus::from(NtError::CANCELLED), NtStatus::CANCELLED);
    assert_eq!(NtError::from_raw(-1), Some(NtError::new(NtStatus::from_raw(-1)).unwrap()));
    assert_eq!(NtError::from_raw(0), None);
    assert_eq!(NtError::NO_MEMORY.to_raw(), NtStatus::NO_MEMORY.to_raw());
    assert_eq!(NtError::CANCELLED.to_string(), "STATUS_CANCELLED");
    assert_eq!(format!("{:?}", NtError::CANCELLED), "STATUS_CANCELLED (0xC0000120)");
    assert_eq!(NtError::from_raw(-2).unwrap().to_string(), "NTSTATUS 0xFFFFFFFE");
    assert_eq!(size_of::<kmdf::Result>(), size_of::<NtStatus>());
}
