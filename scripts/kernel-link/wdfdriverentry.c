/*
 * A stand-in for the WDK's WdfDriverEntry.lib (the KMDF stub every KMDF driver links), so
 * that scripts/check-kernel --link can link a driver on a host without the WDK. Written for
 * this project from the open-source KMDF's fxldr.h (WDF_BIND_INFO, WdfVersionBind) and the
 * public KMDF headers (the globals wdffuncenum.h and wdf.h declare). It is compiled with
 * clang for x86_64-pc-windows-msvc, once per KMDF minor version (-DKMDF_MINOR=33 ...), and
 * is never shipped: a real build links the WDK's library. What it proves is that a driver
 * needs exactly these symbols and imports, not that the WDK's stub behaves like this one.
 *
 * FxDriverEntry (the image's entry point, /ENTRY:FxDriverEntry) binds to the framework
 * with WDFLDR.SYS's WdfVersionBind, which fills WdfFunctions_010XX and WdfDriverGlobals,
 * and then calls the driver's DriverEntry; if DriverEntry fails it unbinds again.
 */

#ifndef KMDF_MINOR
#error "compile with -DKMDF_MINOR=<the KMDF minor version> -DKMDF_FUNCTION_COUNT=<n>"
#endif

typedef long NTSTATUS;
typedef unsigned long ULONG;
typedef unsigned char BOOLEAN;
typedef unsigned short WCHAR;
typedef unsigned long long SIZE_T;
typedef void (*WDFFUNC)(void);
typedef struct _DRIVER_OBJECT DRIVER_OBJECT;   /* only passed through */
typedef struct _UNICODE_STRING UNICODE_STRING; /* only passed through */
typedef struct _WDF_DRIVER_GLOBALS WDF_DRIVER_GLOBALS;

/* fxldr.h */
typedef struct _WDF_VERSION {
    ULONG Major;
    ULONG Minor;
    ULONG Build;
} WDF_VERSION;

typedef struct _WDF_BIND_INFO {
    ULONG Size;
    WCHAR *Component;
    WDF_VERSION Version;
    ULONG FuncCount;
    WDFFUNC *FuncTable;
    void *Module;
} WDF_BIND_INFO;

__declspec(dllimport) NTSTATUS WdfVersionBind(DRIVER_OBJECT *DriverObject,
    UNICODE_STRING *RegistryPath, WDF_BIND_INFO *BindInfo, WDF_DRIVER_GLOBALS **Globals);
__declspec(dllimport) NTSTATUS WdfVersionUnbind(UNICODE_STRING *RegistryPath,
    WDF_BIND_INFO *BindInfo, WDF_DRIVER_GLOBALS *Globals);

/* The driver's own entry point (kmdf::driver_entry! exports it). */
NTSTATUS DriverEntry(DRIVER_OBJECT *DriverObject, UNICODE_STRING *RegistryPath);

#define CAT3(a, b, c) a##b##c
#define FUNCTIONS_NAME(minor) CAT3(WdfFunctions_010, minor, )

/* wdf.h: `#define WdfFunctions WdfFunctions_010XX`; the loader writes the table's address. */
const WDFFUNC *FUNCTIONS_NAME(KMDF_MINOR) = 0;
/* wdffuncenum.h */
WDF_DRIVER_GLOBALS *WdfDriverGlobals = 0;
BOOLEAN WdfClientVersionHigherThanFramework = 0;
ULONG WdfFunctionCount = KMDF_FUNCTION_COUNT;
ULONG WdfStructureCount = 0;
SIZE_T *WdfStructures = 0;

static WCHAR component[] = {'K', 'm', 'd', 'f', 'L', 'i', 'b', 'r', 'a', 'r', 'y', 0};

static WDF_BIND_INFO bind_info = {
    sizeof(WDF_BIND_INFO),
    component,
    {1, KMDF_MINOR, 0},
    KMDF_FUNCTION_COUNT,
    (WDFFUNC *)&FUNCTIONS_NAME(KMDF_MINOR),
    0,
};

NTSTATUS FxDriverEntry(DRIVER_OBJECT *DriverObject, UNICODE_STRING *RegistryPath)
{
    NTSTATUS status = WdfVersionBind(DriverObject, RegistryPath, &bind_info, &WdfDriverGlobals);
    if (status < 0) {
        return status;
    }
    status = DriverEntry(DriverObject, RegistryPath);
    if (status < 0) {
        WdfVersionUnbind(RegistryPath, &bind_info, WdfDriverGlobals);
    }
    return status;
}
