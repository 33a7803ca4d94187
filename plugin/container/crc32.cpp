#include "container/crc32.h"

#ifdef TTH_HAVE_LIBDEFLATE
#include <libdeflate.h>
#else
#include <zlib.h>
#endif

namespace tth::container {

uint32_t crc32_update(uint32_t crc, const void* data, std::size_t size) {
#ifdef TTH_HAVE_LIBDEFLATE
  return libdeflate_crc32(crc, data, size);
#else
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(data), size));
#endif
}

}  // namespace tth::container
