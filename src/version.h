/* The one place the version lives. */
#ifndef BW_VERSION_H
#define BW_VERSION_H
#define BULWARK_VERSION "0.1.0"
#endif
