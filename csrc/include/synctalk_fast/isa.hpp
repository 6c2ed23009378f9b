// The kernels are compiled once per instruction set (see csrc/kernel_table.cpp);
// each copy of every header lives in the inline namespace named by
// STF_ISA_NS, so the copies never merge at link time (ODR) and code built
// for AVX2 can never be called on a CPU without it.
#pragma once

#ifndef STF_ISA_NS
#define STF_ISA_NS generic
#endif
