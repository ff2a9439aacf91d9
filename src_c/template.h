/* Instantiates the body of a kernel header for float (suffix _f) and for double (suffix _d).
 *
 * A kernel header is written once for a scalar type REAL, naming what it defines SFX(name). On
 * its first inclusion (REAL undefined) it sets FASTRNN_BODY to its own file name and includes
 * this file, which includes it again twice, once per type, with REAL and SFX defined. */
#define REAL float
#define SFX(name) name##_f
#include FASTRNN_BODY
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_d
#include FASTRNN_BODY
#undef REAL
#undef SFX

#undef FASTRNN_BODY
