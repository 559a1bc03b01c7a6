#include "core/err.h"

const char *bw_strerror(enum bw_err e)
{
	static const char *const names[] = {
#define BW_ERR_STR(name, str) str,
		BW_ERRORS(BW_ERR_STR)
#undef BW_ERR_STR
	};
	if ((unsigned)e >= sizeof names / sizeof names[0])
		return "unknown error";
	return names[e];
}
