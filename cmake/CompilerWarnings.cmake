# Warnings are on for every target of ours; third-party headers are SYSTEM includes.
function(compress_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align -Woverloaded-virtual
                                           -Wformat=2 -Wimplicit-fallthrough)
  if(WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
