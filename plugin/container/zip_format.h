// The zip record layouts that ZipWriter produces and ZipReader accepts (PKWARE APPNOTE 6.3,
// restricted to one disk, no encryption, stored or deflate members; doc/npz_format.md
// describes the .npz files built from them).
//
// A zip file is a sequence of [local header, name, extra, data] members, then one central
// directory entry per member, then (when a count, size or offset does not fit its 16/32-bit
// field) a ZIP64 end record and its locator, then the end record. The reader trusts only the
// central directory for sizes and CRCs, because local headers may carry zeros (data
// descriptors) or 0xFFFFFFFF (ZIP64). Each record is described here by its signature, its fixed
// size and the byte offsets of the fields the code loads or patches; writers append all fields
// in the order APPNOTE lists them. Constants only: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tth::container {

/// Compression method of a member, with its zip method code.
enum class Compression : uint16_t {
  kStored = 0,   ///< Bytes as they are.
  kDeflate = 8,  ///< Raw deflate stream (RFC 1951), as zlib's negative window bits produce.
};

namespace zip {

/// A 16-bit field holding this value means "see the ZIP64 record" (entry counts).
constexpr uint16_t kMax16 = 0xFFFF;
/// A 32-bit field holding this value means "see the ZIP64 extra or record" (sizes, offsets).
constexpr uint32_t kMax32 = 0xFFFFFFFF;

/// "Version needed to extract" for plain stored/deflate members (2.0).
constexpr uint16_t kVersionDefault = 20;
/// "Version needed to extract" once any ZIP64 structure is involved (4.5).
constexpr uint16_t kVersionZip64 = 45;
/// High byte of "version made by": 3 = UNIX, so external attributes are POSIX modes.
constexpr uint16_t kMadeByUnix = 0x0300;
/// External attributes: POSIX mode 0600 (rw for the owner) in the high 16 bits, as numpy writes.
constexpr uint32_t kExternalAttributes = 0600u << 16;

/// General purpose flag bit 0: the member is encrypted (never supported).
constexpr uint16_t kFlagEncrypted = 0x0001;
/// General purpose flag bit 3: CRC and sizes follow the data (central directory has them too).
constexpr uint16_t kFlagDataDescriptor = 0x0008;
/// General purpose flag bit 11: the name is UTF-8.
constexpr uint16_t kFlagUtf8 = 0x0800;

/// MS-DOS time of every member we write (00:00:00): reproducible output.
constexpr uint16_t kDosTime = 0x0000;
/// MS-DOS date of every member we write (1980-01-01, the earliest DOS date).
constexpr uint16_t kDosDate = 0x0021;

/// Extra field block header: id (2 bytes) and data length (2 bytes).
constexpr std::size_t kExtraHeaderSize = 4;
/// Extra field id of the ZIP64 extended information block.
constexpr uint16_t kZip64ExtraId = 0x0001;
/// Data size of the local ZIP64 extra we write: uncompressed and compressed size (u64 each).
constexpr uint16_t kLocalZip64ExtraDataSize = 16;

/// Local file header: precedes each member's data.
namespace local {
constexpr uint32_t kSignature = 0x04034b50;  ///< "PK\3\4".
constexpr std::size_t kSize = 30;            ///< Fixed part, before name and extra.
constexpr std::size_t kCrc = 14;             ///< CRC-32, then compressed and uncompressed size.
constexpr std::size_t kNameLength = 26;      ///< u16.
constexpr std::size_t kExtraLength = 28;     ///< u16.
}  // namespace local

/// Central directory file header: one per member, after all data.
namespace central {
constexpr uint32_t kSignature = 0x02014b50;     ///< "PK\1\2".
constexpr std::size_t kSize = 46;               ///< Fixed part, before name, extra and comment.
constexpr std::size_t kFlags = 8;               ///< u16.
constexpr std::size_t kMethod = 10;             ///< u16.
constexpr std::size_t kCrc = 16;                ///< u32.
constexpr std::size_t kCompressedSize = 20;     ///< u32, or kMax32 and ZIP64 extra.
constexpr std::size_t kUncompressedSize = 24;   ///< u32, or kMax32 and ZIP64 extra.
constexpr std::size_t kNameLength = 28;         ///< u16.
constexpr std::size_t kExtraLength = 30;        ///< u16.
constexpr std::size_t kCommentLength = 32;      ///< u16.
constexpr std::size_t kLocalHeaderOffset = 42;  ///< u32, or kMax32 and ZIP64 extra.
}  // namespace central

/// End of central directory record: the last record of the file, before an optional comment.
namespace end {
constexpr uint32_t kSignature = 0x06054b50;   ///< "PK\5\6".
constexpr std::size_t kSize = 22;             ///< Fixed part, before the comment.
constexpr std::size_t kMaxComment = 0xFFFF;   ///< The comment length is a u16.
constexpr std::size_t kDisk = 4;              ///< u16 number of this disk, then u16 directory disk.
constexpr std::size_t kDirectoryDisk = 6;     ///< u16.
constexpr std::size_t kEntries = 10;          ///< u16 total entries (the disk's count is at 8).
constexpr std::size_t kDirectorySize = 12;    ///< u32.
constexpr std::size_t kDirectoryOffset = 16;  ///< u32.
constexpr std::size_t kCommentLength = 20;    ///< u16.
}  // namespace end

/// ZIP64 end of central directory record: 64-bit counts, size and offset of the directory.
namespace zip64_end {
constexpr uint32_t kSignature = 0x06064b50;  ///< "PK\6\6".
constexpr std::size_t kSize = 56;            ///< Without an extensible data sector.
/// Value of the "size of this record" field: the record minus its signature and that field.
constexpr uint64_t kRecordSizeValue = kSize - sizeof(uint32_t) - sizeof(uint64_t);
constexpr std::size_t kEntries = 32;          ///< u64 total entries (the disk's count is at 24).
constexpr std::size_t kDirectorySize = 40;    ///< u64.
constexpr std::size_t kDirectoryOffset = 48;  ///< u64.
}  // namespace zip64_end

/// ZIP64 end of central directory locator: sits right before the end record.
namespace zip64_locator {
constexpr uint32_t kSignature = 0x07064b50;  ///< "PK\6\7".
constexpr std::size_t kSize = 20;
constexpr std::size_t kRecordOffset = 8;  ///< u64 offset of the ZIP64 end record.
constexpr uint32_t kTotalDisks = 1;       ///< Value of the "total number of disks" field.
}  // namespace zip64_locator

}  // namespace zip
}  // namespace tth::container
