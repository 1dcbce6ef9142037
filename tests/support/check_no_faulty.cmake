# ctest unit.no_faulty_backend_in_edgeserve: the fault-injecting backend's
# symbols appear in edgeserve_faulty and nowhere in edgeserve.
# cmake -DNM=nm -DEDGESERVE=... -DEDGESERVE_FAULTY=... -P check_no_faulty.cmake
foreach(var NM EDGESERVE EDGESERVE_FAULTY)
  if(NOT ${var})
    message(FATAL_ERROR "${var} is not set")
  endif()
endforeach()

function(faulty_symbols binary out)
  execute_process(COMMAND ${NM} ${binary} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE symbols ERROR_VARIABLE errors)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} ${binary} failed: ${errors}")
  endif()
  string(REGEX MATCHALL "[^\n]*faulty[^\n]*" found "${symbols}")
  set(${out} "${found}" PARENT_SCOPE)
endfunction()

faulty_symbols(${EDGESERVE_FAULTY} in_faulty)
if(NOT in_faulty MATCHES "es_faulty_backend_register")
  message(FATAL_ERROR "the check sees no faulty backend in ${EDGESERVE_FAULTY}: it cannot be trusted")
endif()
faulty_symbols(${EDGESERVE} in_edgeserve)
if(in_edgeserve)
  message(FATAL_ERROR "edgeserve contains the test-only faulty backend: ${in_edgeserve}")
endif()
message(STATUS "edgeserve has no faulty backend symbols")
