/*
 * The SIP-server independent helpers shared with the Kamailio module (module-glue/common),
 * compiled as part of this module: OpenSIPS builds only the .c files of a module's directory,
 * and the copy in <tree>/modules/dmbridge finds them through DMB_TOP (see Makefile).
 */
#include "dmglue.c"
