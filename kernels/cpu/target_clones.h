// kernels/cpu/target_clones.h: UNETCU_TARGET_CLONES("isa") compiles a function twice, for that
// instruction set and for the library's baseline (x86-64-v2), and the CPU picks one when the
// program loads (GCC's function multi-versioning). The baseline stays portable; CPUs that have
// the wider instructions use them. With other compilers the function is compiled once.
//
// Two rules for its use:
//  * Both clones must give the same bits: an ISA that brings FMA ("fma", "arch=x86-64-v3")
//    lets GCC contract a*b + c into one rounding, so only use it where every multiply-add is
//    already an explicit std::fma; "avx2" brings no FMA.
//  * Put it on a function called from an OpenMP region, never on one that contains the
//    region: GCC outlines a region's body before it clones, so the body would not be cloned.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define UNETCU_TARGET_CLONES(isa) __attribute__((target_clones(isa, "default")))
#else
#define UNETCU_TARGET_CLONES(isa)
#endif
